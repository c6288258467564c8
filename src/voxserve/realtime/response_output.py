"""The server events of a response's output as its reply comes in: the assistant message (text or
audio with its transcript), function calls and their arguments, and the events that close them all
with `response.done`. An in-conversation response's items also join the conversation."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from voxserve.engines.spoken_reply import AudioPiece, ReplyEvent, TextDelta, ToolCallDelta
from voxserve.realtime.conversation_events import ConversationEvents
from voxserve.realtime.conversation_items import public_item
from voxserve.realtime.response_state import Response, render_response
from voxserve.realtime.session_env import SessionEnv


class ResponseOutput:
    def __init__(
        self,
        env: SessionEnv,
        events: ConversationEvents,
        conversation_id: str,
        *,
        emit: Callable[[dict[str, Any]], None],
        append_item: Callable[[dict[str, Any]], str | None],
        has_item: Callable[[str], bool],
    ) -> None:
        self.env = env
        self.events = events
        self.conversation_id = conversation_id
        self._emit = emit
        self._append_item = append_item  # adds an item at the conversation's end; returns the id before it
        self._has_item = has_item  # whether the conversation still holds an item (the client may delete it)

    def render(self, response: Response) -> dict[str, Any]:
        return render_response(response, self.events, self.conversation_id)

    def add(self, response: Response, event: ReplyEvent) -> None:
        """A piece of the reply: its text, a piece of its audio, or tool-call deltas."""
        if isinstance(event, TextDelta):
            self.text(response, event.text)
        elif isinstance(event, AudioPiece):
            self.audio(response, event)
        elif isinstance(event, ToolCallDelta):
            self.tool_calls(response, event.tool_calls)

    def text(self, response: Response, text: str) -> None:
        self._open_message(response)
        assert response.message is not None
        response.text += text
        if response.audio_out:
            delta = self.events.transcript_delta(response.id, response.message["id"], response.message_index, text)
        else:
            delta = self.events.text_delta(response.id, response.message["id"], response.message_index, text)
        self._emit(delta)

    def audio(self, response: Response, piece: AudioPiece) -> None:
        self._open_message(response)
        assert response.message is not None
        data = response.encode(piece.pcm)
        if response.first_audio_at is None:
            response.first_audio_at = self.env.clock()
        response.pieces.append((piece.start_ms, piece.end_ms, piece.text))
        response.audio_ms = piece.end_ms
        if data:
            self._emit(
                self.events.audio_delta(
                    response.id, response.message["id"], response.message_index, base64.b64encode(data).decode()
                )
            )

    def _open_message(self, response: Response) -> None:
        if response.message is not None:
            return
        item = {
            "id": self.env.ids("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        response.message = item
        response.message_index = len(response.output)
        response.output.append(item)
        self._emit(self.events.output_item_added(response.id, response.message_index, item))
        if response.in_conversation:
            response.message_previous = self._append_item(item)
            self._emit(self.events.item_added(item, response.message_previous))
        part = {"type": "audio", "transcript": ""} if response.audio_out else {"type": "text", "text": ""}
        self._emit(self.events.content_part_added(response.id, item["id"], response.message_index, part))

    def tool_calls(self, response: Response, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            index = int(delta.get("index") or 0)
            function = delta.get("function") or {}
            call = response.calls.get(index)
            if call is None:
                call = {
                    "id": self.env.ids("item"),
                    "object": "realtime.item",
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": delta.get("id") or self.env.ids("call"),
                    "name": function.get("name") or "",
                    "arguments": "",
                }
                response.calls[index] = call
                call["_index"] = len(response.output)
                response.output.append(call)
                shown = public_item(call)
                self._emit(self.events.output_item_added(response.id, call["_index"], shown))
                if response.in_conversation:
                    response.call_previous[index] = self._append_item(call)
                    self._emit(self.events.item_added(shown, response.call_previous[index]))
            elif function.get("name") and not call["name"]:
                call["name"] = function["name"]
            piece = function.get("arguments")
            if piece:
                call["arguments"] += piece
                self._emit(self.events.arguments_delta(response.id, call["id"], call["_index"], call["call_id"], piece))

    def finish(self, response: Response, status: str, details: dict[str, Any] | None, *, item_status: str) -> None:
        """Close the response's message and calls, then `response.done`."""
        response.status = status
        message = response.message
        if message is not None:
            index = response.message_index
            if response.audio_out:
                part = {"type": "output_audio", "transcript": response.text}
                self._emit(self.events.audio_done(response.id, message["id"], index))
                self._emit(self.events.transcript_done(response.id, message["id"], index, response.text))
                shown_part = {"type": "audio", "transcript": response.text}
            else:
                part = {"type": "output_text", "text": response.text}
                self._emit(self.events.text_done(response.id, message["id"], index, response.text))
                shown_part = {"type": "text", "text": response.text}
            self._emit(self.events.content_part_done(response.id, message["id"], index, shown_part))
            message["content"] = [part]
            message["status"] = item_status
            if response.audio_out:
                message["_pieces"] = list(response.pieces)
            shown = public_item(message)
            self._emit(self.events.output_item_done(response.id, index, shown))
            if response.in_conversation and self._has_item(message["id"]):
                done = self.events.item_finished(shown, response.message_previous)
                if done is not None:
                    self._emit(done)
        for index, call in sorted(response.calls.items()):
            call["status"] = "completed" if status == "completed" else "incomplete"
            shown = public_item(call)
            if status == "completed":
                self._emit(
                    self.events.arguments_done(
                        response.id, call["id"], call["_index"], call["call_id"], call["name"], call["arguments"]
                    )
                )
            self._emit(self.events.output_item_done(response.id, call["_index"], shown))
            if response.in_conversation and self._has_item(call["id"]):
                done = self.events.item_finished(shown, response.call_previous.get(index))
                if done is not None:
                    self._emit(done)
        out = self.render(response)
        out["output"] = [self.events.item(public_item(item)) for item in response.output]
        out["status_details"] = details
        self._emit(self.events.response_done(out))
