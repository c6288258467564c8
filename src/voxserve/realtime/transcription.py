"""Transcription sessions (`?intent=transcription`): input audio in, turns and their transcripts out."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from voxserve.realtime.config import (
    InputAudioConfig,
    InputTranscription,
    TranscriptionSessionConfig,
    is_beta_shape,
    parse_transcription_update,
    render_beta_transcription_session,
    render_ga_transcription_session,
)
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.session import RealtimeSession
from voxserve.realtime.session_env import SessionEnv


class TranscriptionSession(RealtimeSession):
    kind: ClassVar[str] = "transcription"
    beta_session_prefix: ClassVar[str] = "transcription_session"

    def __init__(
        self,
        env: SessionEnv,
        dialect: Dialect = Dialect.GA,
        *,
        config: TranscriptionSessionConfig | None = None,
        client_secret: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(env, dialect, client_secret)
        self.config = config or self.default_config(env.default_stt_model)
        self._handlers["session.update"] = self._update
        self._handlers["transcription_session.update"] = self._update

    @staticmethod
    def default_config(model: str) -> TranscriptionSessionConfig:
        """Transcription is on from the start (OpenAI leaves it off until set; a transcription session
        without it would only report turns)."""
        return TranscriptionSessionConfig(InputAudioConfig(transcription=InputTranscription(model)))

    @property
    def input_config(self) -> InputAudioConfig:
        return self.config.input

    @property
    def logprobs(self) -> bool:
        return self.config.logprobs

    def session_object(self) -> dict[str, Any]:
        if self.dialect is Dialect.BETA:
            return render_beta_transcription_session(self.config, self.id, self.expires_at, self.client_secret)
        return render_ga_transcription_session(self.config, self.id, self.expires_at)

    def _update(self, event: dict[str, Any]) -> None:
        if "session" in event:
            body = event["session"]
            param = "session"
        else:
            # The seed's example puts the fields beside `type`, without a `session` wrapper.
            body = {k: v for k, v in event.items() if k not in ("type", "event_id")}
            param = ""
        if isinstance(body, dict) and body.get("type") not in (None, "transcription"):
            raise ClientEventError(
                "This is a transcription session: its type cannot be changed "
                f"(got '{str(body.get('type'))[:40]}'). Open a new connection for a conversation.",
                code="invalid_value",
                param=f"{param}.type" if param else "type",
            )
        updated = parse_transcription_update(self.config, body, self.env.default_stt_model, param=param)
        where = f"{param}." if param else ""
        nested = "audio.input.transcription" if not _is_flat(body) else "input_audio_transcription"
        self._check_transcription(updated.input.transcription, where + nested)
        if updated.input.noise_reduction is not None and self.config.input.noise_reduction is None:
            check_denoise(self.env, where)
        self.config = updated
        self._configure_input()
        self.outbox.append(self.events.session_updated(self.session_object()))


def check_denoise(env: SessionEnv, where: str) -> None:
    """Refuse `noise_reduction` (param `{where}noise_reduction`) when the denoiser cannot start here."""
    try:
        probe = env.input_stream("pcm16", True)
    except Exception as exc:
        raise ClientEventError(
            f"Noise reduction is not available on this server: {exc}.",
            code="unsupported_value",
            param=f"{where}noise_reduction",
        ) from exc
    probe.close()


def _is_flat(body: Any) -> bool:
    return isinstance(body, dict) and is_beta_shape(body)


def with_model(config: TranscriptionSessionConfig, model: str) -> TranscriptionSessionConfig:
    """`config` transcribing with `model` (a `?model=` on the URL naming a speech-to-text model)."""
    if config.input.transcription is None:
        return config
    transcription = dataclasses.replace(config.input.transcription, model=model)
    return dataclasses.replace(config, input=dataclasses.replace(config.input, transcription=transcription))
