"""Helpers for the chat tests: input_audio parts and reading delta.audio from any SDK version."""

from __future__ import annotations

import base64
from typing import Any


def audio_part(data: bytes, fmt: str) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def delta_audio(delta: Any) -> dict[str, Any]:
    """`delta.audio` as a dict: newer SDKs type it, older ones keep it in model_extra."""
    audio = getattr(delta, "audio", None) or (delta.model_extra or {}).get("audio")
    if audio is None:
        return {}
    return audio if isinstance(audio, dict) else audio.model_dump(exclude_none=True)
