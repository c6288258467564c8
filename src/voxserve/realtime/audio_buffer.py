"""A session's input audio buffer: 16 kHz float32, addressed by absolute sample positions.

Positions count every sample the session has accepted, so VAD events, `audio_start_ms` and item
boundaries all share one time base; the buffer itself only keeps what a turn may still need.
"""

from __future__ import annotations

import numpy as np


class AudioBuffer:
    def __init__(self) -> None:
        self.origin = 0  # absolute position of the first kept sample
        self._chunks: list[np.ndarray] = []
        self._length = 0

    @property
    def end(self) -> int:
        """Absolute position just after the last sample."""
        return self.origin + self._length

    def __len__(self) -> int:
        return self._length

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self._chunks.append(samples)
            self._length += samples.size

    def slice(self, start: int, end: int) -> np.ndarray:
        start, end = max(start, self.origin), min(end, self.end)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        self._compact()
        return self._chunks[0][start - self.origin : end - self.origin].copy()

    def drop_before(self, position: int) -> None:
        """Forget the samples before `position`."""
        position = min(max(position, self.origin), self.end)
        if position == self.origin:
            return
        self._compact()
        self._chunks = [self._chunks[0][position - self.origin :]] if position < self.end else []
        self._length = self.end - position
        self.origin = position

    def clear(self) -> None:
        self.drop_before(self.end)

    def _compact(self) -> None:
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
