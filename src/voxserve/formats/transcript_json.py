"""Transcript to the JSON bodies of OpenAI's transcription and translation responses."""

from __future__ import annotations

import math
from typing import Any

from voxserve.languages import language_name
from voxserve.transcript import Segment, TokenLogprob, Transcript, audio_tokens


def duration_usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def token_usage(transcript: Transcript) -> dict[str, Any]:
    audio = audio_tokens(transcript.duration)
    inputs = audio + transcript.prompt_tokens
    return {
        "type": "tokens",
        "input_tokens": inputs,
        "input_token_details": {"text_tokens": transcript.prompt_tokens, "audio_tokens": audio},
        "output_tokens": transcript.output_tokens,
        "total_tokens": inputs + transcript.output_tokens,
    }


def logprobs_json(logprobs: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": lp.bytes} for lp in logprobs]


def transcript_logprobs(transcript: Transcript) -> list[TokenLogprob]:
    return [TokenLogprob.from_word(w) for w in transcript.words]


def segment_json(segment: Segment) -> dict[str, Any]:
    return {
        "id": segment.id,
        "seek": segment.seek,
        "start": segment.start,
        "end": segment.end,
        "text": segment.text,
        "tokens": segment.tokens,
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def simple_json(transcript: Transcript, *, usage: str | None, logprobs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"text": transcript.text}
    if logprobs:
        body["logprobs"] = logprobs_json(transcript_logprobs(transcript))
    if usage == "tokens":
        body["usage"] = token_usage(transcript)
    elif usage == "duration":
        body["usage"] = duration_usage(transcript)
    return body


def verbose_json(transcript: Transcript, *, segments: bool, words: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": "english" if transcript.task == "translate" else language_name(transcript.language),
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in transcript.words]
    if segments:
        body["segments"] = [segment_json(s) for s in transcript.segments]
    if transcript.task == "transcribe":
        body["usage"] = duration_usage(transcript)
    return body
