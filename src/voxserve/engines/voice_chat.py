"""The audio around a chat: spoken questions become text, text answers become speech.

Works on OpenAI chat messages (plain dicts) so the same code serves every chat backend.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.spoken_answers import SpokenAnswers
from voxserve.engines.spoken_reply import speakable
from voxserve.engines.text_to_speech import TextToSpeech, VoiceEntry
from voxserve.engines.whisper import TranscribeOptions
from voxserve.errors import InvalidRequest, VoxError

INPUT_AUDIO_FORMATS = ("wav", "mp3")
# Chat's `audio.format` names mapped to the speech encoder's; pcm16 is raw 24 kHz s16le.
OUTPUT_AUDIO_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", "aac": "aac", "pcm16": "pcm"}


def _matches(fmt: str, data: bytes) -> bool:
    if fmt == "wav":
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    # mp3: an ID3 tag, or an MPEG audio frame sync word
    return data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)


def question_options(beam_size: int) -> TranscribeOptions:
    """How a spoken question is transcribed (benchmarks/chat.py times the same).

    One short window, the audio plus 3 s: never Whisper's full 30 s, whose attention buffers set the
    server's peak memory (every default model loaded, 24 spoken chats: 1108 -> 1047 MiB), nor a clip's
    15 s window. On 2 x 24 espeak-ng questions the 15 s window cost 0.14 s more per question (0.33 s
    against 0.19 s) and the model answered 17 + 20 right against 19 + 20; the 30 s re-decode, 18 + 18.
    Also measured on those questions, none better on both sets: beam 2 (20 + 20), language "en" (the same
    text), VAD padding of 100 or 800 ms (no misheard word fixed), a conversational prompt (17 + 20), and
    the clip resampled by FFT instead of FFmpeg's resampler (18 + 21).
    """
    return TranscribeOptions(beam_size=beam_size, trimmed_only=True)


@dataclass
class PreparedMessages:
    messages: list[dict[str, Any]]
    audio_seconds: float  # of all input_audio parts, for usage


class VoiceChat:
    def __init__(
        self, stt: SpeechToText, tts: TextToSpeech, answers: SpokenAnswers, stt_model: str, stt_beam_size: int = 1
    ) -> None:
        self.stt = stt
        self.tts = tts
        self.answers = answers
        self.stt_model = stt_model
        self.stt_beam_size = stt_beam_size

    async def _transcribe(self, data: bytes, param: str) -> tuple[str, float]:
        spec = self.stt.resolve(self.stt_model)
        try:
            transcript = await self.stt.transcribe(spec, io.BytesIO(data), question_options(self.stt_beam_size))
        except InvalidRequest as exc:
            raise InvalidRequest(f"{param}: {exc.message}", param=param, code=exc.code) from exc
        return transcript.text, transcript.duration

    async def _audio_part_text(self, part: dict[str, Any], where: str) -> tuple[str, float]:
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise InvalidRequest(
                "input_audio must be an object with `data` and `format`.", param=f"{where}.input_audio"
            )
        fmt = audio.get("format")
        if fmt not in INPUT_AUDIO_FORMATS:
            raise InvalidRequest(
                f"input_audio.format must be one of {list(INPUT_AUDIO_FORMATS)}.",
                param=f"{where}.input_audio.format",
                code="unsupported_value",
            )
        raw = audio.get("data")
        if not isinstance(raw, str) or not raw:
            raise InvalidRequest("input_audio.data must be base64-encoded audio.", param=f"{where}.input_audio.data")
        try:
            data = await asyncio.to_thread(base64.b64decode, raw, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(
                "input_audio.data is not valid base64.", param=f"{where}.input_audio.data", code="invalid_value"
            ) from exc
        if not _matches(fmt, data):
            raise InvalidRequest(
                f"input_audio.data is not {fmt} audio, as input_audio.format says.",
                param=f"{where}.input_audio.format",
                code="invalid_value",
            )
        return await self._transcribe(data, f"{where}.input_audio.data")

    async def prepare(self, messages: Any, *, flatten: bool) -> PreparedMessages:
        """Replace input_audio parts with their transcripts and earlier spoken answers (by id) with
        their text. With `flatten`, content lists become plain strings for backends that need them."""
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest("messages must be a non-empty array.", param="messages")
        out: list[dict[str, Any]] = []
        seconds = 0.0
        for i, original in enumerate(messages):
            if not isinstance(original, dict) or not isinstance(original.get("role"), str):
                raise InvalidRequest("Each message must be an object with a `role`.", param=f"messages[{i}]")
            message = deepcopy(original)
            content = message.get("content")
            if isinstance(content, list):
                parts = []
                for j, part in enumerate(content):
                    where = f"messages[{i}].content[{j}]"
                    if not isinstance(part, dict) or "type" not in part:
                        raise InvalidRequest("Each content part must be an object with a `type`.", param=where)
                    if part["type"] == "input_audio":
                        if message["role"] != "user":
                            raise InvalidRequest("input_audio parts are allowed in user messages only.", param=where)
                        text, duration = await self._audio_part_text(part, where)
                        seconds += duration
                        parts.append({"type": "text", "text": text})
                    else:
                        parts.append(part)
                message["content"] = parts
                if flatten:
                    message["content"] = self._flatten(parts, f"messages[{i}].content")
            if message["role"] == "assistant" and isinstance(message.get("audio"), dict):
                message["content"] = self._earlier_answer(message.pop("audio"), i)
            elif "audio" in message and message.get("audio") is None:
                message.pop("audio")
            out.append(message)
        return PreparedMessages(out, seconds)

    @staticmethod
    def _flatten(parts: list[dict[str, Any]], where: str) -> str:
        texts = []
        for j, part in enumerate(parts):
            if part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                texts.append(part["refusal"])
                continue
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequest(
                    f"Content parts of type `{part.get('type')}` are not supported by this model.",
                    param=f"{where}[{j}]",
                    code="unsupported_value",
                )
            texts.append(part["text"])
        return "\n".join(t for t in texts if t)

    def _earlier_answer(self, audio: dict[str, Any], index: int) -> str:
        answer_id = audio.get("id")
        answer = self.answers.get(answer_id) if isinstance(answer_id, str) else None
        if answer is None:
            raise InvalidRequest(
                f"Audio output `{answer_id}` is unknown or has expired.",
                param=f"messages[{index}].audio.id",
                code="invalid_value",
            )
        return answer.transcript

    def voice(self, name: str, fmt: str) -> tuple[VoiceEntry, str]:
        """The request's `audio.voice` and `audio.format`: (voice, speech encoder format)."""
        if fmt not in OUTPUT_AUDIO_FORMATS:
            raise InvalidRequest(
                f"audio.format must be one of {list(OUTPUT_AUDIO_FORMATS)}.",
                param="audio.format",
                code="unsupported_value",
            )
        try:
            entry = self.tts.voices.resolve(name)
        except VoxError as exc:
            raise InvalidRequest(exc.message, param="audio.voice", code=exc.code) from exc
        return entry, OUTPUT_AUDIO_FORMATS[fmt]

    async def speak(self, text: str, voice: VoiceEntry, fmt: str) -> tuple[bytes, float]:
        """The whole answer as one file in `fmt`, with its duration in seconds."""
        return await self.tts.synthesize(voice, speakable(text) or text, 1.0, fmt)
