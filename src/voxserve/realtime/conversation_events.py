"""Server events of conversation sessions (responses and item management), named for the dialect:
GA `response.output_audio.delta`, beta `response.audio.delta`, and so on (contract §6.2, §6.7)."""

from __future__ import annotations

from typing import Any

from voxserve.realtime.conversation_items import public_item
from voxserve.realtime.protocol import Dialect, EventFactory

_BETA_CONTENT = {"output_text": "text", "output_audio": "audio"}


class ConversationEvents(EventFactory):
    def _name(self, ga: str, beta: str) -> str:
        return beta if self.dialect is Dialect.BETA else ga

    def item(self, item: dict[str, Any]) -> dict[str, Any]:
        """An item as this dialect writes it: beta names assistant content `text` / `audio`."""
        if self.dialect is Dialect.GA or item.get("type") != "message":
            return _copy(item)
        out = _copy(item)
        out["content"] = [{**part, "type": _BETA_CONTENT.get(part["type"], part["type"])} for part in item["content"]]
        return out

    def item_added(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
        return self.item_announced(self.item(item), previous_item_id)

    def item_finished(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any] | None:
        return self.item_done(self.item(item), previous_item_id)

    def item_retrieved(self, item: dict[str, Any]) -> dict[str, Any]:
        return self._event("conversation.item.retrieved", item=self.item(item))

    def item_deleted(self, item_id: str) -> dict[str, Any]:
        return self._event("conversation.item.deleted", item_id=item_id)

    def item_truncated(self, item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
        return self._event(
            "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
        )

    # responses
    def response_created(self, response: dict[str, Any]) -> dict[str, Any]:
        return self._event("response.created", response=response)

    def response_done(self, response: dict[str, Any]) -> dict[str, Any]:
        return self._event("response.done", response=response)

    def output_item_added(self, response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
        return self._event(
            "response.output_item.added", response_id=response_id, output_index=index, item=self.item(item)
        )

    def output_item_done(self, response_id: str, index: int, item: dict[str, Any]) -> dict[str, Any]:
        return self._event(
            "response.output_item.done", response_id=response_id, output_index=index, item=self.item(item)
        )

    def _part_event(self, type_: str, response_id: str, item_id: str, index: int, **fields: Any) -> dict[str, Any]:
        return self._event(
            type_, response_id=response_id, item_id=item_id, output_index=index, content_index=0, **fields
        )

    def content_part_added(self, response_id: str, item_id: str, index: int, part: dict[str, Any]) -> dict[str, Any]:
        return self._part_event("response.content_part.added", response_id, item_id, index, part=part)

    def content_part_done(self, response_id: str, item_id: str, index: int, part: dict[str, Any]) -> dict[str, Any]:
        return self._part_event("response.content_part.done", response_id, item_id, index, part=part)

    def text_delta(self, response_id: str, item_id: str, index: int, delta: str) -> dict[str, Any]:
        type_ = self._name("response.output_text.delta", "response.text.delta")
        return self._part_event(type_, response_id, item_id, index, delta=delta)

    def text_done(self, response_id: str, item_id: str, index: int, text: str) -> dict[str, Any]:
        type_ = self._name("response.output_text.done", "response.text.done")
        return self._part_event(type_, response_id, item_id, index, text=text)

    def transcript_delta(self, response_id: str, item_id: str, index: int, delta: str) -> dict[str, Any]:
        type_ = self._name("response.output_audio_transcript.delta", "response.audio_transcript.delta")
        return self._part_event(type_, response_id, item_id, index, delta=delta)

    def transcript_done(self, response_id: str, item_id: str, index: int, transcript: str) -> dict[str, Any]:
        type_ = self._name("response.output_audio_transcript.done", "response.audio_transcript.done")
        return self._part_event(type_, response_id, item_id, index, transcript=transcript)

    def audio_delta(self, response_id: str, item_id: str, index: int, delta: str) -> dict[str, Any]:
        type_ = self._name("response.output_audio.delta", "response.audio.delta")
        return self._part_event(type_, response_id, item_id, index, delta=delta)

    def audio_done(self, response_id: str, item_id: str, index: int) -> dict[str, Any]:
        type_ = self._name("response.output_audio.done", "response.audio.done")
        return self._part_event(type_, response_id, item_id, index)

    def arguments_delta(self, response_id: str, item_id: str, index: int, call_id: str, delta: str) -> dict[str, Any]:
        return self._event(
            "response.function_call_arguments.delta",
            response_id=response_id,
            item_id=item_id,
            output_index=index,
            call_id=call_id,
            delta=delta,
        )

    def arguments_done(
        self, response_id: str, item_id: str, index: int, call_id: str, name: str, arguments: str
    ) -> dict[str, Any]:
        return self._event(
            "response.function_call_arguments.done",
            response_id=response_id,
            item_id=item_id,
            output_index=index,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    out = public_item(item)
    if "content" in out:
        out["content"] = [dict(part) for part in out["content"]]
    return out
