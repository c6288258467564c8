"""The CLI's `--url` backend: a running voxserve (or any OpenAI-compatible server) through the `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import av
import openai
from openai import OpenAI

from voxserve.cli.backend import CliError, FileProgress, ModelRow, SpeakOptions, StopAll, TranscribeOptions

T = TypeVar("T")


def api_base(url: str) -> str:
    """`http://host:8000` and `http://host:8000/v1` both mean the API at `/v1`."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


def audio_seconds(path: Path) -> float | None:
    """The file's length from its container, without decoding it; None when the container does not say."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration:
                return float(container.duration / av.time_base)
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, OSError, ValueError):
        pass  # the server will say what is wrong with it
    return None


class RemoteBackend:
    def __init__(self, url: str, api_key: str | None, timeout: float = 600.0) -> None:
        self.url = url
        self.has_key = bool(api_key)
        # A server without keys accepts any; the SDK insists on some string.
        self.client = OpenAI(base_url=api_base(url), api_key=api_key or "voxserve", timeout=timeout, max_retries=2)

    def _call(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise StopAll(f"cannot reach {self.url}: {cause}") from exc
        except openai.AuthenticationError as exc:
            hint = "" if self.has_key else " Give the server's key with --api-key (or VOXSERVE_API_KEY)."
            raise StopAll(f"{self._message(exc)}{hint}") from exc
        except openai.APIStatusError as exc:
            raise CliError(self._message(exc)) from exc

    @staticmethod
    def _message(exc: openai.APIStatusError) -> str:
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.response.text or exc.message
        return f"{message} (HTTP {exc.status_code})"

    def transcribe(self, path: Path, options: TranscribeOptions, progress: FileProgress) -> str:
        progress.set_total(audio_seconds(path))
        extra: dict[str, Any] = {}
        if options.language:
            extra["language"] = options.language
        if options.prompt:
            extra["prompt"] = options.prompt
        with path.open("rb") as audio:
            # The raw body: exactly what the server sent, in every format.
            response = self._call(
                lambda: self.client.audio.transcriptions.with_raw_response.create(
                    model=options.model or "whisper-1",
                    file=audio,
                    response_format=options.response_format,  # type: ignore[arg-type]
                    temperature=options.temperature,
                    **extra,
                )
            )
        body = response.http_response.text
        if options.response_format in ("json", "verbose_json"):
            return json.dumps(json.loads(body), ensure_ascii=False, indent=2) + "\n"
        return body

    def speak(self, text: str, options: SpeakOptions) -> bytes:
        def call() -> bytes:
            with self.client.audio.speech.with_streaming_response.create(
                model=options.model or "tts-1",
                voice=options.voice,
                input=text,
                response_format=options.response_format,  # type: ignore[arg-type]
                speed=options.speed,
            ) as response:
                return b"".join(response.iter_bytes())

        return self._call(call)

    def models(self) -> list[ModelRow]:
        listed = self._call(lambda: self.client.models.list())
        rows = [ModelRow(m.id, "model", getattr(m, "root", None)) for m in listed]
        voices = self._call(self._voices)
        for voice in voices.get("data", []) if isinstance(voices, dict) else []:
            local = voice.get("voice")
            rows.append(ModelRow(voice["id"], "voice", local if local != voice["id"] else None))
        return rows

    def _voices(self) -> object:
        # voxserve lists its voices apart from its models; another OpenAI-compatible server may not.
        try:
            return self.client.get("/audio/voices", cast_to=object)
        except openai.NotFoundError:
            return {}

    def close(self) -> None:
        self.client.close()
