"""Deadlines for reading a request body, enforced around the app's `receive`.

Without them a client that sends its headers and then its body a byte a minute (or not at all) holds
a connection, a parser and, for an upload, a temporary file for as long as it likes. Header reading
happens before the app is called, so its deadline lives in the HTTP protocol (`server.http_protocol`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.server.errors import RequestTimeout


class BodyDeadlineMiddleware:
    """While a body is incomplete, each read may wait at most `idle` seconds for the next piece, and the
    whole body must arrive within `total` seconds of the request starting. Past either the app gets
    RequestTimeout (a 408 that closes the connection). Once the body is complete, `receive` is passed
    through untouched: waiting on it then means waiting for the client to disconnect, which has no
    deadline.
    """

    def __init__(self, app: ASGIApp, idle: float, total: float) -> None:
        self.app = app
        self.idle = idle
        self.total = total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.total
        complete = False

        async def timed_receive() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            left = deadline - time.monotonic()
            wait = min(self.idle, left)
            try:
                message: dict[str, Any] = await asyncio.wait_for(receive(), max(wait, 0.001))
            except TimeoutError:
                if left <= self.idle:
                    raise RequestTimeout(
                        f"The request body did not arrive within {self.total:g} seconds (VOXSERVE_BODY_TIMEOUT)."
                    ) from None
                raise RequestTimeout(
                    f"No part of the request body arrived for {self.idle:g} seconds (VOXSERVE_BODY_IDLE_TIMEOUT)."
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await self.app(scope, timed_receive, send)
