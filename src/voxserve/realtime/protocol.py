"""Server events, named and shaped for the protocol a connection speaks: GA (default) or beta.

The input-audio and input-transcription events have the same names and fields in both; the session
events and the item announcement differ (contract §6.2). Builders return plain dicts ready for JSON.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Dialect(StrEnum):
    GA = "ga"
    BETA = "beta"


def new_id(prefix: str) -> str:
    """OpenAI-style ids: `event_…`, `item_…`, `sess_…` with 22 random characters."""
    return f"{prefix}_{secrets.token_urlsafe(16)[:22].replace('-', 'A').replace('_', 'B')}"


IdSource = Callable[[str], str]


@dataclass
class EventFactory:
    dialect: Dialect
    ids: IdSource = new_id
    # The session kind decides the beta names of the session events (`transcription_session.*`).
    beta_session_prefix: str = "session"

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, "event_id": self.ids("event"), **fields}

    # session
    def session_created(self, session: dict[str, Any]) -> dict[str, Any]:
        prefix = self.beta_session_prefix if self.dialect is Dialect.BETA else "session"
        return self._event(f"{prefix}.created", session=session)

    def session_updated(self, session: dict[str, Any]) -> dict[str, Any]:
        prefix = self.beta_session_prefix if self.dialect is Dialect.BETA else "session"
        return self._event(f"{prefix}.updated", session=session)

    def error(
        self,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> dict[str, Any]:
        return self._event(
            "error",
            error={"type": type_, "code": code, "message": message, "param": param, "event_id": client_event_id},
        )

    # input audio buffer
    def speech_started(self, audio_start_ms: int, item_id: str) -> dict[str, Any]:
        return self._event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)

    def speech_stopped(self, audio_end_ms: int, item_id: str) -> dict[str, Any]:
        return self._event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)

    def committed(self, item_id: str, previous_item_id: str | None) -> dict[str, Any]:
        return self._event("input_audio_buffer.committed", previous_item_id=previous_item_id, item_id=item_id)

    def cleared(self) -> dict[str, Any]:
        return self._event("input_audio_buffer.cleared")

    # conversation items
    def item_announced(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
        type_ = "conversation.item.created" if self.dialect is Dialect.BETA else "conversation.item.added"
        return self._event(type_, previous_item_id=previous_item_id, item=item)

    def item_done(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any] | None:
        """GA only: the item again once its transcript is known."""
        if self.dialect is Dialect.BETA:
            return None
        return self._event("conversation.item.done", previous_item_id=previous_item_id, item=item)

    # input transcription
    def transcription_delta(
        self, item_id: str, delta: str, logprobs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"item_id": item_id, "content_index": 0, "delta": delta}
        if logprobs is not None:
            fields["logprobs"] = logprobs
        return self._event("conversation.item.input_audio_transcription.delta", **fields)

    def transcription_completed(
        self, item_id: str, transcript: str, usage: dict[str, Any], logprobs: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"item_id": item_id, "content_index": 0, "transcript": transcript, "usage": usage}
        if logprobs is not None:
            fields["logprobs"] = logprobs
        return self._event("conversation.item.input_audio_transcription.completed", **fields)

    def transcription_failed(self, item_id: str, message: str, code: str | None) -> dict[str, Any]:
        return self._event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": "transcription_error", "code": code, "message": message, "param": None},
        )


def user_audio_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }
