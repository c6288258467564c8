"""What a CLI command asks for, independent of where it runs (in-process or a server at `--url`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


class CliError(Exception):
    """A failure to report as one line, with the exit code to leave with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class StopAll(CliError):
    """The server at --url is unreachable or refuses the key: no point trying the next file."""


@dataclass(frozen=True)
class TranscribeOptions:
    model: str | None  # None: the backend's default
    language: str | None
    response_format: str
    prompt: str | None
    temperature: float


@dataclass(frozen=True)
class SpeakOptions:
    model: str | None
    voice: str
    response_format: str
    speed: float


@dataclass(frozen=True)
class ModelRow:
    id: str
    kind: str
    alias_of: str | None


class FileProgress(Protocol):
    """How far one file has got, in seconds of decoded audio."""

    def set_total(self, seconds: float | None) -> None: ...

    def advance_to(self, seconds: float) -> None: ...


class Backend(Protocol):
    def transcribe(self, path: Path, options: TranscribeOptions, progress: FileProgress) -> str:
        """The transcript of one file, rendered in `options.response_format` exactly as the API does."""
        ...

    def speak(self, text: str, options: SpeakOptions) -> bytes: ...

    def models(self) -> list[ModelRow]: ...

    def close(self) -> None: ...
