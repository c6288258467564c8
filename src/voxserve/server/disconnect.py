"""Stopping work for a client that has gone away while its (non-streamed) answer is being computed.

A streamed response notices a departed client when a write fails; a plain response only writes at the
end, so without this a transcription runs to its end for nobody, holding an engine slot all the while.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    # Once the body has been read, the server's receive() only returns when the client disconnects.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`; if the client disconnects first, `work` is cancelled and ClientDisconnect
    raised (the error handlers log it as one line). Call only after the request body has been read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watcher.cancel()
        raise
    if task in done:
        watcher.cancel()
        return task.result()
    task.cancel()
    # Let the work's own cleanup (releasing its engine slot) finish before the request ends.
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnect
