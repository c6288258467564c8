"""Bounded concurrency and a bounded wait queue in front of an engine.

CPU-heavy engine calls run on the gate's own thread pool, never on the event loop. When every slot
is busy and the queue is full, a new request is refused at once (Overloaded) instead of piling up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from voxserve.errors import Overloaded

T = TypeVar("T")


class Slot:
    """A held place on the gate: work submitted through it runs on the gate's threads.

    `leases` holds what the work keeps open with it (model leases): released with the slot, so a
    streamed response that owns a slot frees everything by releasing it once.
    """

    def __init__(self, gate: EngineGate) -> None:
        self._gate = gate
        self._released = False
        self.leases = contextlib.ExitStack()

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._gate.executor, fn, *args)

    def release(self) -> None:
        # Idempotent: a streamed response releases from its generator and from a background task.
        if not self._released:
            self._released = True
            try:
                self.leases.close()
            finally:
                self._gate._release()

    @contextlib.contextmanager
    def released_on_error(self) -> Iterator[Slot]:
        """For opening a stream: a failure releases the slot; success leaves it to the stream."""
        try:
            yield self
        except BaseException:
            self.release()
            raise


class EngineGate:
    def __init__(self, name: str, concurrency: int, max_queue: int, retry_after: int = 1) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.name = name
        self.concurrency = concurrency
        self.max_queue = max(0, max_queue)
        self.retry_after = retry_after
        self.executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"vox-{name}")
        self._active = 0
        self._waiters: list[asyncio.Future[None]] = []
        self.rejected = 0  # requests refused with Overloaded since start (read by the server's metrics)

    @property
    def active(self) -> int:
        return self._active

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> Slot:
        if self._active < self.concurrency and not self._waiters:
            self._active += 1
            return Slot(self)
        if len(self._waiters) >= self.max_queue:
            self.rejected += 1
            raise Overloaded(self.name, self.retry_after)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed to us as we were cancelled: pass it on
            raise
        return Slot(self)

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self._active -= 1

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        held = await self.acquire()
        try:
            yield held
        finally:
            held.release()

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
