"""One conversation response as it runs: what it was asked for, what it has said so far (text, audio
pieces, tool calls), its audio in the client's format, and how it reads as a `realtime.response`.
Also what it asks of the chat backend, its token usage, and the session's responses in progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxserve.audio.g711 import encode_g711
from voxserve.audio.resample import StreamResampler
from voxserve.engines.spoken_reply import ReplyDone
from voxserve.realtime.chat_history import bound_history, estimate_tokens, items_to_messages
from voxserve.realtime.config import render_ga_format
from voxserve.realtime.conversation_events import ConversationEvents
from voxserve.realtime.conversation_items import heard_text
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect
from voxserve.transcript import audio_tokens

# Room kept in the context for the reply itself and the chat template's own tokens.
CONTEXT_MARGIN = 64


@dataclass
class Response:
    id: str
    in_conversation: bool
    modalities: tuple[str, ...]
    output_format: str
    voice: str
    speed: float
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    instructions: str
    tools: tuple[dict[str, Any], ...]
    tool_choice: str | dict[str, Any]
    input_items: list[dict[str, Any]] | None = None  # out-of-band: its own input
    trigger: str | None = None  # the spoken turn that started it (server VAD)
    status: str = "in_progress"
    started: bool = False
    output: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None
    message_index: int = 0
    message_previous: str | None = None
    text: str = ""
    pieces: list[tuple[float, float, str]] = field(default_factory=list)  # audio sent: (start ms, end ms, text)
    audio_ms: float = 0.0
    first_audio_at: float | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    call_previous: dict[int, str | None] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    resampler: StreamResampler | None = None

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities

    def heard_ms(self, clock: Callable[[], float]) -> float:
        """How much of the answer's audio a client playing it in real time has heard by now."""
        if self.first_audio_at is None:
            return 0.0
        return max(0.0, min(self.audio_ms, (clock() - self.first_audio_at) * 1000))

    def cut(self, heard_ms: float) -> int | None:
        """Keep what was heard of the audio: what was not heard was not said, so the text keeps the
        words of the audio played. Returns where the audio was truncated (None: it was all heard)."""
        cut = min(heard_ms, self.audio_ms)
        self.text = heard_text(self.pieces, cut)
        truncated_at = None
        if cut < self.audio_ms or self.audio_ms == 0:
            truncated_at = int(cut)
        self.pieces = [(s, min(e, cut), t) for s, e, t in self.pieces if s < cut]
        self.audio_ms = cut
        return truncated_at

    def encode(self, pcm: bytes) -> bytes:
        """24 kHz PCM16 audio in the response's output format."""
        if self.output_format == "pcm16":
            return pcm
        if self.resampler is None:
            self.resampler = StreamResampler(24000, 8000)
        samples = self.resampler.push(np.frombuffer(pcm, dtype="<i2").astype(np.int16))
        pcm8k = np.clip(samples * 32768.0, -32768, 32767).astype(np.int16)
        return encode_g711(pcm8k, "ulaw" if self.output_format == "g711_ulaw" else "alaw")


class Responses:
    """A session's responses in progress: any number out of the conversation, at most one in it."""

    def __init__(self) -> None:
        self.by_id: dict[str, Response] = {}
        self.active: Response | None = None  # the in-conversation response, at most one
        self.auto_waiting = False  # a VAD turn ended while a response ran without interruption
        self.cancels: list[str] = []  # for the driver: stop these at once

    def add(self, response: Response) -> None:
        self.by_id[response.id] = response
        if response.in_conversation:
            self.active = response

    def in_progress(self, response_id: str) -> Response | None:
        response = self.by_id.get(response_id)
        if response is None or response.status != "in_progress":
            return None
        return response

    def speaking(self, message: dict[str, Any]) -> Response | None:
        """The response whose assistant message this is, while it runs."""
        return next((r for r in self.by_id.values() if r.message is message), None)

    def to_cancel(self, wanted: Any) -> Response:
        """The response a `response.cancel` names (`response_id`; None: the active one)."""
        if wanted is not None:
            response = self.by_id.get(wanted) if isinstance(wanted, str) else None
            if response is None:
                raise ClientEventError(
                    f"Cannot cancel response '{str(wanted)[:100]}': it is not in progress.",
                    code="response_cancel_not_active",
                    param="response_id",
                )
        else:
            response = self.active
            if response is None:
                raise ClientEventError(
                    "Cancellation failed: no active response found.", code="response_cancel_not_active"
                )
        return response

    def ended(self, response: Response) -> bool:
        """Forget a response that has ended; True when a VAD turn waited for it to end to be answered."""
        self.by_id.pop(response.id, None)
        if self.active is response:
            self.active = None
            if self.auto_waiting:
                self.auto_waiting = False
                return True
        return False

    def take_cancels(self) -> list[str]:
        out, self.cancels = self.cancels, []
        return out

    def close(self) -> None:
        for response in list(self.by_id.values()):
            self.cancels.append(response.id)
        self.by_id.clear()
        self.active = None


def render_response(response: Response, events: ConversationEvents, conversation_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object": "realtime.response",
        "id": response.id,
        "status": response.status,
        "status_details": None,
        "output": [events.item(item) for item in response.output],
        "conversation_id": conversation_id if response.in_conversation else None,
        "max_output_tokens": response.max_output_tokens,
        "usage": response.usage,
        "metadata": response.metadata,
    }
    if events.dialect is Dialect.BETA:
        out["modalities"] = ["text", "audio"] if response.audio_out else ["text"]
        out["voice"] = response.voice
        out["output_audio_format"] = response.output_format
    else:
        out["output_modalities"] = list(response.modalities)
        out["audio"] = {"output": {"format": render_ga_format(response.output_format), "voice": response.voice}}
    return out


def chat_request(
    response: Response, items: list[dict[str, Any]], *, chat_model: str, max_tokens: int, context_tokens: int
) -> dict[str, Any]:
    """The chat backend's request for `response`, over `items` (bounded to the model's context)."""
    limit = max_tokens
    if isinstance(response.max_output_tokens, int):
        limit = min(limit, response.max_output_tokens)
    system = {"role": "system", "content": response.instructions}
    budget = context_tokens - limit - estimate_tokens(system) - CONTEXT_MARGIN
    history = bound_history(items_to_messages(items), max(budget, 1))
    body: dict[str, Any] = {
        "model": chat_model,
        "messages": [system, *history] if response.instructions else history,
        "max_tokens": limit,
        "stream_options": {"include_usage": True},
    }
    if response.tools and response.tool_choice != "none":
        body["tools"] = [
            {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}} for tool in response.tools
        ]
        choice = response.tool_choice
        body["tool_choice"] = (
            choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice["name"]}}
        )
    return body


def response_usage(done: ReplyDone) -> dict[str, Any]:
    usage = done.usage or {}
    text_in = int(usage.get("prompt_tokens") or 0)
    text_out = int(usage.get("completion_tokens") or 0)
    audio_out = audio_tokens(done.audio_ms / 1000) if done.audio_ms else 0
    return {
        "total_tokens": text_in + text_out + audio_out,
        "input_tokens": text_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
