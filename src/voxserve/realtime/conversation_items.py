"""A conversation's items as the client sends and sees them: parsing a client's item into the session's
form (with the audio of a user audio message, decoded), the public view of a stored item, and what of
an assistant answer's audio a listener heard before it was cut (truncation and barge-in)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

import numpy as np

from voxserve.audio.input_stream import InputAudioStream
from voxserve.realtime.errors import ClientEventError


def parse_client_item(
    raw: dict[str, Any],
    param: str,
    *,
    new_id: Callable[[str], str],
    decode_audio: Callable[[Any, str], np.ndarray],
) -> tuple[dict[str, Any], np.ndarray | None]:
    """A client's item in the conversation's form, and the audio of a user audio message."""
    kind = raw.get("type", "message")
    item_id = raw.get("id") or new_id("item")
    if not isinstance(item_id, str) or len(item_id) > 64:
        raise ClientEventError("'item.id' must be a string of at most 64 characters.", param=f"{param}.id")
    base = {"id": item_id, "object": "realtime.item", "status": "completed"}
    if kind == "function_call_output":
        call_id, output = raw.get("call_id"), raw.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise ClientEventError(
                "A function_call_output item needs string 'call_id' and 'output'.",
                code="missing_required_parameter",
                param=f"{param}.call_id" if not isinstance(call_id, str) else f"{param}.output",
            )
        return {**base, "type": "function_call_output", "call_id": call_id, "output": output}, None
    if kind == "function_call":
        name, arguments = raw.get("name"), raw.get("arguments", "")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise ClientEventError("A function_call item needs a string 'name' and 'arguments'.", param=f"{param}.name")
        call_id = raw.get("call_id") if isinstance(raw.get("call_id"), str) else new_id("call")
        return {**base, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}, None
    if kind != "message":
        raise ClientEventError(
            f"Invalid value: '{str(kind)[:60]}'. Supported item types: message, function_call, function_call_output.",
            code="invalid_value",
            param=f"{param}.type",
        )
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        raise ClientEventError("A message item needs a 'role': user, assistant or system.", param=f"{param}.role")
    content = raw.get("content")
    if not isinstance(content, list) or not content:
        raise ClientEventError("A message item needs a non-empty 'content' array.", param=f"{param}.content")
    parts: list[dict[str, Any]] = []
    audio: np.ndarray | None = None
    for index, part in enumerate(content):
        where = f"{param}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        allowed = {
            "user": ("input_text", "input_audio"),
            "system": ("input_text",),
            "assistant": ("output_text", "text", "output_audio", "audio"),
        }[role]
        if kind not in allowed:
            raise ClientEventError(
                f"Content of type '{str(kind)[:40]}' is not allowed in a {role} message here "
                f"(allowed: {', '.join(allowed)}).",
                code="invalid_value",
                param=f"{where}.type",
            )
        assert isinstance(part, dict)
        if kind in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise ClientEventError("A text part needs a string 'text'.", param=f"{where}.text")
            parts.append({"type": "output_text" if role == "assistant" else "input_text", "text": part["text"]})
        elif kind == "input_audio":
            transcript = part.get("transcript")
            if isinstance(transcript, str) and transcript:
                parts.append({"type": "input_audio", "transcript": transcript})
                continue
            audio = decode_audio(part.get("audio"), f"{where}.audio")
            parts.append({"type": "input_audio", "transcript": None})
        else:
            transcript = part.get("transcript")
            if not isinstance(transcript, str):
                raise ClientEventError("An audio part needs a string 'transcript'.", param=f"{where}.transcript")
            parts.append({"type": "output_audio", "transcript": transcript})
    if audio is not None and len(parts) != 1:
        raise ClientEventError(
            "A user audio message without a transcript holds that one audio part only.",
            param=f"{param}.content",
        )
    return {**base, "type": "message", "role": role, "content": parts}, audio


def decode_item_audio(
    audio: Any, param: str, open_stream: Callable[[], InputAudioStream], max_audio_seconds: float
) -> np.ndarray:
    """The samples of an item's base64 audio, in the session's input format (`open_stream`)."""
    if not isinstance(audio, str) or not audio:
        raise ClientEventError("An input_audio part needs base64 'audio'.", code="missing_required_parameter",
                               param=param)  # fmt: skip
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClientEventError(f"Invalid 'audio': not valid base64 ({exc}).", param=param) from exc
    stream = open_stream()
    try:
        samples = stream.push(raw)
    finally:
        stream.close()
    if samples.size < 1600:
        raise ClientEventError("The audio is shorter than 100 ms.", param=param)
    if samples.size > max_audio_seconds * 16000:
        raise ClientEventError(f"The audio is longer than {max_audio_seconds:g} s.", param=param)
    return samples


def public_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item without the session's private bookkeeping (keys starting with `_`)."""
    return {k: v for k, v in item.items() if not k.startswith("_")}


def heard_text(pieces: list[tuple[float, float, str]], cut_ms: float) -> str:
    """The words of the answer whose audio ends by `cut_ms`: whole pieces, then the share of words of
    the piece cut in the middle that fits in the time heard of it."""
    words: list[str] = []
    for start, end, text in pieces:
        if end <= cut_ms:
            words.append(text)
            continue
        if start < cut_ms and end > start:
            split = text.split()
            keep = int(len(split) * (cut_ms - start) / (end - start))
            if keep:
                words.append(" ".join(split[:keep]))
        break
    return " ".join(words)


def parse_truncation(item: dict[str, Any], event: dict[str, Any], *, speaking_audio: bool = False) -> tuple[int, int]:
    """The `content_index` and `audio_end_ms` of a `conversation.item.truncate` of `item`.

    `speaking_audio`: the item is the audio answer still being generated. Its content is filled in only when
    the answer ends, yet a client that stops playback mid-answer truncates exactly that item."""
    content_index = event.get("content_index", 0)
    audio_end_ms = event.get("audio_end_ms")
    has_audio = speaking_audio or any(p["type"] == "output_audio" for p in item["content"])
    if item.get("role") != "assistant" or not has_audio:
        raise ClientEventError("Only assistant messages with audio can be truncated.", param="item_id")
    parts = max(len(item["content"]), 1 if speaking_audio else 0)
    if isinstance(content_index, bool) or not isinstance(content_index, int) or not 0 <= content_index < parts:
        raise ClientEventError("Invalid 'content_index'.", param="content_index")
    if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
        raise ClientEventError("'audio_end_ms' must be a non-negative integer.", param="audio_end_ms")
    return content_index, audio_end_ms


def check_audio_end(audio_end_ms: int, pieces: list[tuple[float, float, str]]) -> None:
    """A truncation may not end past the audio sent (`pieces`), give or take a millisecond."""
    total = pieces[-1][1] if pieces else 0.0
    if audio_end_ms > total + 1:
        raise ClientEventError(
            f"audio_end_ms ({audio_end_ms}) is longer than the item's audio ({int(total)} ms).",
            param="audio_end_ms",
        )


def truncate_item(item: dict[str, Any], pieces: list[tuple[float, float, str]], cut_ms: float) -> None:
    for part in item["content"]:
        if part["type"] == "output_audio":
            part["transcript"] = heard_text(pieces, cut_ms)
    item["_pieces"] = [(s, min(e, cut_ms), t) for s, e, t in pieces if s < cut_ms]
