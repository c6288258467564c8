"""How a batch of Whisper windows runs on the CPU: its windows encoded one per call, and, for long audio,
the batch split into two halves that run at once on a second instance of the weights (`HalfPair`).

`chunk_batches.Batch` and `whisper.TranscriptionRun` choose between these and the engine's own model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel


def encode_windows(model: WhisperModel, stacked: np.ndarray, per_call: int) -> ctranslate2.StorageView:
    """The encoder's output for a batch of windows, encoded `per_call` windows at a time on CPU.

    On CPU a batched encoder call is no faster per window than one window at a time (8 windows of 30 s,
    2 cores: tiny.en 1.74-2.69 s as batches of 4, 1.75-1.80 s one by one; base 4.2-4.4 s vs 3.7-4.2 s),
    and its buffers grow with the batch: the attention scores and activations of 4 windows are allocated
    and page-faulted afresh for every layer (3x the page faults of one window at a time) and raise the
    process's peak memory. The beam search still decodes the whole batch at once, which is where
    batching pays.
    """
    if per_call <= 0 or len(stacked) <= per_call or model.model.device != "cpu":
        return model.encode(stacked)
    parts = [np.asarray(model.encode(stacked[i : i + per_call])) for i in range(0, len(stacked), per_call)]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(parts)))


class HalfPair:
    """A second instance of the weights for batched long audio: two replicas with half the engine's
    threads each (`inter_threads=2`; one thread each on 2 cores), so a batch runs as two half-batches at once.

    On 2 cores a batch on one replica with two threads per operation waits at every operation's barrier;
    two half-batches on one thread each do not (dev-speech's 231 s reading, tiny.en, 8 windows encoded
    one by one then decoded with beam 5: 5.5-5.7 s as 2 + 2 at once vs 6.6-8.2 s as batches of 4, the
    same text). Short clips, streams and realtime keep the engine's own model (all cores on one window).
    Loaded on the first batch that needs it.
    """

    def __init__(self, path: str, device: str, compute_type: str, threads_each: int = 1) -> None:
        self._path = path
        self._device = device
        self._compute_type = compute_type
        self._threads_each = threads_each  # half the engine's threads, so the pair uses the same cores
        self._model: ctranslate2.models.Whisper | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> ctranslate2.models.Whisper:
        with self._lock:
            if self._model is None:
                self._model = ctranslate2.models.Whisper(
                    self._path,
                    device=self._device,
                    compute_type=self._compute_type,
                    inter_threads=2,
                    intra_threads=self._threads_each,
                )
            return self._model

    def encode(self, stacked: np.ndarray) -> ctranslate2.StorageView:
        """Each half of the windows encoded on its own thread, one window per call; outputs in order."""
        model = self.model

        def half(windows: np.ndarray) -> list[np.ndarray]:
            return [
                np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(w[None]))))
                for w in windows
            ]

        middle = (len(stacked) + 1) // 2
        first, second = _PAIR_THREADS.map(half, [stacked[:middle], stacked[middle:]])
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.concatenate(first + second)))

    def generate(
        self, encoded: Callable[[list[int]], ctranslate2.StorageView], prompts: list[list[int]], **options: Any
    ) -> list[Any]:
        """`generate` over two half-batches at once (the replicas each take one); results in order."""
        middle = (len(prompts) + 1) // 2
        halves = [list(range(middle)), list(range(middle, len(prompts)))]
        pending = [
            self.model.generate(encoded(h), [prompts[i] for i in h], asynchronous=True, **options) for h in halves
        ]
        return [item.result() for half in pending for item in half]


_PAIR_THREADS = ThreadPoolExecutor(2, thread_name_prefix="whisper-half")
