"""Helpers for the conversation tests: spoken questions in a voice that is not the server's, the
contract's event order for one response, and the audio of an answer put back together."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from tests.chat_tools import espeak_wav
from tests.realtime_tools import EventReader, decode_pcm

# Contract §6.7: one audio reply, GA names (deltas collapsed to one entry each).
AUDIO_REPLY = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]
TEXT_REPLY = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


_ANNOUNCED = ("conversation.item.added", "conversation.item.created", "conversation.item.done")


def espeak_pcm(text: str, rate: int = 24000) -> np.ndarray:
    """`text` spoken by espeak-ng, as mono int16 at `rate` (the Realtime API's PCM16 at 24 kHz)."""
    return decode_pcm(io.BytesIO(espeak_wav(text)), rate)


def response_events(reader: EventReader, response_id: str) -> list[dict[str, Any]]:
    """The events of one response, with the conversation events of the items it made, in order."""
    item_ids: set[str] = set()
    out = []
    for _, event in reader.events:
        if event.get("response_id") == response_id or (event.get("response") or {}).get("id") == response_id:
            out.append(event)
            if event["type"] == "response.output_item.added":
                item_ids.add(event["item"]["id"])
        elif event["type"] in _ANNOUNCED and (event.get("item") or {}).get("id") in item_ids:
            out.append(event)
    return out


def collapsed(events: list[dict[str, Any]]) -> list[str]:
    """Event types in order, each delta type listed once (where it first appears)."""
    seen: list[str] = []
    for event in events:
        kind = event["type"]
        if kind.endswith(".delta") and kind in seen:
            continue
        seen.append(kind)
    return seen


def answer_pcm(events: list[dict[str, Any]], kind: str = "response.output_audio.delta") -> bytes:
    return b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == kind)


def pcm_wav(pcm: bytes, rate: int = 24000) -> bytes:
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
