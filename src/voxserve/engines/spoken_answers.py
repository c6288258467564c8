"""Transcripts of spoken chat answers, kept until they expire so a later turn can refer to them by id."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SpokenAnswer:
    id: str
    transcript: str
    expires_at: int  # Unix seconds


class SpokenAnswers:
    """Bounded in time (`ttl` seconds) and in memory (`max_entries`, oldest dropped first)."""

    def __init__(self, ttl: int = 3600, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._items: OrderedDict[str, SpokenAnswer] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return f"audio_{secrets.token_hex(16)}"

    def remember(self, answer_id: str, transcript: str) -> SpokenAnswer:
        answer = SpokenAnswer(answer_id, transcript, int(self._clock()) + self.ttl)
        with self._lock:
            self._purge()
            self._items[answer_id] = answer
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return answer

    def get(self, answer_id: str) -> SpokenAnswer | None:
        with self._lock:
            self._purge()
            return self._items.get(answer_id)

    def _purge(self) -> None:
        now = self._clock()
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.expires_at > now:
                break
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
