"""The CLI's in-process backend: the same runtime and engines as the server, no server needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from voxserve.cli.backend import CliError, FileProgress, ModelRow, SpeakOptions, TranscribeOptions
from voxserve.config import Settings
from voxserve.engines import whisper
from voxserve.errors import VoxError
from voxserve.formats import transcript_json
from voxserve.formats.subtitles import to_srt, to_vtt
from voxserve.runtime import Runtime
from voxserve.transcript import Transcript

T = TypeVar("T")


def render(transcript: Transcript, response_format: str, model: str) -> str:
    """The body `/v1/audio/transcriptions` would answer with, for the same transcript."""
    if response_format == "text":
        return transcript.text + "\n"
    if response_format == "srt":
        return to_srt(transcript.segments)
    if response_format == "vtt":
        return to_vtt(transcript.segments)
    if response_format == "verbose_json":
        body = transcript_json.verbose_json(transcript, segments=True, words=False)
    else:
        # As the server does: OpenAI's gpt-4o names report token usage, whisper-1 and local ids seconds.
        usage = "tokens" if model.startswith("gpt-") else "duration"
        body = transcript_json.simple_json(transcript, usage=usage, logprobs=False)
    return json.dumps(body, ensure_ascii=False, indent=2) + "\n"


class LocalBackend:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.runtime = Runtime.build(self.settings)
        # One loop for the command's life: the engines' admission gates belong to it.
        self._runner = asyncio.Runner()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return self._runner.run(work)
        except VoxError as exc:
            raise CliError(exc.message) from exc

    def transcribe(self, path: Path, options: TranscribeOptions, progress: FileProgress) -> str:
        return self._run(self._transcribe(path, options, progress))

    async def _transcribe(self, path: Path, options: TranscribeOptions, progress: FileProgress) -> str:
        model = options.model or self.settings.default_stt_model
        spec = self.runtime.stt.resolve(model)
        engine_options = whisper.TranscribeOptions(
            task="transcribe",
            language=options.language,
            prompt=options.prompt,
            temperature=options.temperature,
            beam_size=self.settings.beam_size,
        )
        with path.open("rb") as source:
            # Decoding happens here, so the file's length is known before the first segment.
            stream = await self.runtime.stt.open_stream(spec, source, engine_options)
        progress.set_total(stream.transcript.duration)
        async for segment in stream.segments():
            progress.advance_to(segment.end)
        return render(stream.transcript, options.response_format, model)

    def speak(self, text: str, options: SpeakOptions) -> bytes:
        return self._run(self._speak(text, options))

    async def _speak(self, text: str, options: SpeakOptions) -> bytes:
        tts = self.runtime.tts
        tts.resolve_model(options.model or self.settings.default_tts_model)
        voice = tts.voices.resolve(options.voice)
        audio, _ = await tts.synthesize(voice, text, options.speed, options.response_format)
        return audio

    def models(self) -> list[ModelRow]:
        return [
            ModelRow(model_id, spec.kind, None if model_id == spec.id else spec.id)
            for model_id, spec in self.runtime.registry.listing()
        ]

    def close(self) -> None:
        try:
            self._runner.run(self.runtime.aclose())
        finally:
            self._runner.close()
