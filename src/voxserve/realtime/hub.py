"""Everything realtime sessions share, built once by the runtime: the session cap and count, the key
minter, the decode runner, and the environment each new session is given."""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from voxserve.engines.live_transcription import DecodeRunner
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.realtime.config import TranscriptionSessionConfig, parse_transcription_update
from voxserve.realtime.conversations import Conversations
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.session_env import SessionEnv
from voxserve.realtime.tokens import KeyMinter
from voxserve.realtime.transcription import TranscriptionSession


class SessionsFull(Exception):
    """The configured number of concurrent realtime sessions is reached."""


class RealtimeHub:
    def __init__(
        self,
        stt: SpeechToText,
        env: SessionEnv,
        *,
        max_sessions: int,
        key_secret: str | None = None,
        clock: Callable[[], float] = time.time,
        audio_threads: int = 2,
    ) -> None:
        self.stt = stt
        self.env = env
        self.max_sessions = max_sessions
        self.minter = KeyMinter(key_secret or secrets.token_urlsafe(32))
        self.clock = clock
        self.runner = DecodeRunner(stt)
        # Audio conversion, denoising and VAD of appends: off the event loop, apart from the STT gate.
        self.audio_executor = ThreadPoolExecutor(max_workers=audio_threads, thread_name_prefix="vox-realtime")
        self._active = 0
        # Conversation sessions (speech in, speech out); the runtime connects them to the chat engines.
        self.conversations: Conversations | None = None

    @property
    def active_sessions(self) -> int:
        """Realtime sessions open right now (for /health and metrics)."""
        return self._active

    def open(self) -> None:
        if self._active >= self.max_sessions:
            raise SessionsFull(f"this server takes at most {self.max_sessions} realtime sessions at once")
        self._active += 1

    def release(self) -> None:
        self._active = max(0, self._active - 1)

    def default_transcription_model(self) -> str:
        return self.env.default_stt_model

    def transcription_config(
        self, session: dict[str, Any] | None, param: str = "session"
    ) -> TranscriptionSessionConfig:
        """A transcription session config from a GA or beta body (minting keys, or a key's payload)."""
        base = TranscriptionSession.default_config(self.env.default_stt_model)
        if not session:
            return base
        return parse_transcription_update(base, session, self.env.default_stt_model, param=param)

    def transcription_session(
        self,
        dialect: Dialect,
        config: TranscriptionSessionConfig | None = None,
        client_secret: dict[str, Any] | None = None,
    ) -> TranscriptionSession:
        return TranscriptionSession(dataclasses.replace(self.env), dialect, config=config, client_secret=client_secret)

    def shutdown(self) -> None:
        self.audio_executor.shutdown(wait=False, cancel_futures=True)
