"""POST /v1/audio/transcriptions and /v1/audio/translations."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask

from voxserve.engines.speech_to_text import SegmentStream
from voxserve.engines.whisper import DEFAULT_VAD, TranscribeOptions, VadSettings
from voxserve.errors import InvalidRequest
from voxserve.formats import transcript_json
from voxserve.formats.subtitles import to_srt, to_vtt
from voxserve.server.disconnect import unless_disconnected
from voxserve.server.errors import invalid_from_validation
from voxserve.server.forms import AudioForm, read_audio_form
from voxserve.server.schemas import ServerVad, TranscriptionRequest, TranslationRequest
from voxserve.server.sse import sse_response
from voxserve.server.state import get_state
from voxserve.transcript import TokenLogprob, Transcript, Word, next_piece, sentence_pieces

router = APIRouter()
M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], form: AudioForm) -> M:
    if form.file is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    try:
        return model.model_validate(form.fields)
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors())) from exc


def _usage_kind(model_name: str) -> str:
    # OpenAI's gpt-4o transcription models report token usage, whisper-1 reports seconds.
    return "tokens" if model_name.startswith("gpt-") else "duration"


def _render(
    transcript: Transcript,
    fmt: str,
    *,
    usage: str | None,
    logprobs: bool = False,
    segments: bool = True,
    words: bool = False,
) -> Response:
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(transcript.segments))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(transcript.segments), media_type="text/vtt")
    if fmt == "verbose_json":
        return JSONResponse(transcript_json.verbose_json(transcript, segments=segments, words=words))
    return JSONResponse(transcript_json.simple_json(transcript, usage=usage, logprobs=logprobs))


async def _stream_events(stream: SegmentStream, logprobs: bool) -> AsyncIterator[dict[str, Any]]:
    text = ""
    all_logprobs: list[TokenLogprob] = []
    sent = False
    async for segment in stream.segments():
        piece = next_piece(segment, text)
        sentences = sentence_pieces(piece)
        words = _words_per_piece(segment.words or [], sentences) if logprobs else []
        for index, sentence in enumerate(sentences):
            event: dict[str, Any] = {"type": "transcript.text.delta", "delta": sentence}
            if logprobs:
                piece_logprobs = [TokenLogprob.from_word(w) for w in words[index]]
                all_logprobs += piece_logprobs
                event["logprobs"] = transcript_json.logprobs_json(piece_logprobs)
            text += sentence
            sent = True
            yield event
    if not sent:  # the stream always opens with a delta, even for audio with no speech
        yield {"type": "transcript.text.delta", "delta": ""} | ({"logprobs": []} if logprobs else {})
    done: dict[str, Any] = {"type": "transcript.text.done", "text": text}
    if logprobs:
        done["logprobs"] = transcript_json.logprobs_json(all_logprobs)
    done["usage"] = transcript_json.token_usage(stream.transcript)
    yield done


def _words_per_piece(words: list[Word], pieces: list[str]) -> list[list[Word]]:
    """Each word goes with the piece of text its last character falls in (words and pieces both
    spell the segment's text, so their running lengths line up)."""
    ends = list(itertools.accumulate(len(p) for p in pieces))
    grouped: list[list[Word]] = [[] for _ in pieces]
    position = 0
    for word in words:
        position += len(word.word)
        grouped[min(bisect.bisect_left(ends, position), len(pieces) - 1)].append(word)
    return grouped


def _vad(strategy: str | ServerVad | None) -> VadSettings:
    if isinstance(strategy, ServerVad):
        return strategy.to_settings()
    if strategy == "auto":
        return VadSettings()  # server_vad's documented defaults
    return DEFAULT_VAD


@router.post("/v1/audio/transcriptions")
async def create_transcription(request: Request) -> Response:
    state = get_state(request)
    form = await read_audio_form(request)
    try:
        req = _validate(TranscriptionRequest, form)
        assert form.file is not None
        spec = state.stt.resolve(req.model)
        options = TranscribeOptions(
            task="transcribe",
            language=req.language,
            prompt=req.prompt,
            temperature=req.temperature,
            word_timestamps=req.words or req.logprobs,
            vad=_vad(req.chunking_strategy),
            beam_size=state.settings.beam_size,
        )
        if req.stream:
            stream = await state.stt.open_stream(spec, form.file.file, options)
            response = sse_response(_stream_events(stream, req.logprobs))
            # Releases the engine slot even if the client left before the first event was sent.
            response.background = BackgroundTask(stream.close)
            return response
        transcript = await unless_disconnected(request, state.stt.transcribe(spec, form.file.file, options))
    finally:
        await form.close()
    return _render(
        transcript,
        req.response_format,
        usage=_usage_kind(req.model),
        logprobs=req.logprobs,
        segments=req.segments,
        words=req.words,
    )


@router.post("/v1/audio/translations")
async def create_translation(request: Request) -> Response:
    state = get_state(request)
    form = await read_audio_form(request)
    try:
        req = _validate(TranslationRequest, form)
        assert form.file is not None
        spec = state.stt.resolve(req.model)
        options = TranscribeOptions(
            task="translate",
            prompt=req.prompt,
            temperature=req.temperature,
            beam_size=state.settings.beam_size,
        )
        transcript = await unless_disconnected(request, state.stt.transcribe(spec, form.file.file, options))
    finally:
        await form.close()
    return _render(transcript, req.response_format, usage=None)
