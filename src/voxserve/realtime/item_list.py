"""A conversation's items in their order: a client's new item (parsed, placed after a given item,
first, or last), and finding or removing one by id for the client's events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from voxserve.realtime.conversation_items import parse_client_item
from voxserve.realtime.errors import ClientEventError


class ItemList:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def index(self, item_id: str) -> int | None:
        for index, item in enumerate(self.items):
            if item.get("id") == item_id:
                return index
        return None

    def insert(self, item: dict[str, Any], previous_item_id: str | None, *, at_end: bool) -> str | None:
        """Insert `item` after `previous_item_id` (None: at the end; "root": first); returns the id before it."""
        if at_end or previous_item_id is None:
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            return previous
        if previous_item_id == "root":
            self.items.insert(0, item)
            return None
        index = self.index(previous_item_id)
        if index is None:
            raise ClientEventError(
                f"Item with id '{previous_item_id[:100]}' not found.", code="item_not_found", param="previous_item_id"
            )
        self.items.insert(index + 1, item)
        return previous_item_id

    def create(
        self, event: dict[str, Any], *, new_id: Callable[[str], str], decode_audio: Callable[[Any, str], np.ndarray]
    ) -> tuple[dict[str, Any], str | None, np.ndarray | None]:
        """A `conversation.item.create`'s item, inserted: the item, the id before it, the audio of a
        user audio message (its transcript is to come)."""
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise ClientEventError("Missing required parameter: 'item'.", code="missing_required_parameter",
                                   param="item")  # fmt: skip
        previous = event.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise ClientEventError("'previous_item_id' must be a string.", param="previous_item_id")
        item, audio = parse_client_item(raw, "item", new_id=new_id, decode_audio=decode_audio)
        if item["id"] in {i["id"] for i in self.items}:
            raise ClientEventError(
                f"Item with id '{item['id']}' already exists.", code="item_already_exists", param="item.id"
            )
        before = self.insert(item, previous, at_end=previous is None)
        return item, before, audio

    def get(self, item_id: str) -> dict[str, Any] | None:
        index = self.index(item_id)
        return None if index is None else self.items[index]

    def is_last(self, item: dict[str, Any]) -> bool:
        return bool(self.items) and self.items[-1] is item

    def find(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The item a client event names by `item_id`."""
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ClientEventError("Missing required parameter: 'item_id'.", code="missing_required_parameter",
                                   param="item_id")  # fmt: skip
        index = self.index(item_id)
        if index is None:
            raise ClientEventError(f"Item with id '{item_id[:100]}' not found.", code="item_not_found",
                                   param="item_id")  # fmt: skip
        return index, self.items[index]

    def remove(self, event: dict[str, Any]) -> dict[str, Any]:
        """Remove the item a `conversation.item.delete` names."""
        index, item = self.find(event)
        del self.items[index]
        return item

    def last_id(self) -> str | None:
        return self.items[-1]["id"] if self.items else None
