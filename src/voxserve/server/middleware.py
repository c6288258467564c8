"""ASGI middleware that wraps the whole app: request ids, API-key auth and the upload size limit.

They sit outside FastAPI so that even errors produced by Starlette's own outer layers carry an
`x-request-id`, and so that an oversized or unauthenticated upload is refused before it is read.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve.errors import VoxError
from voxserve.server.errors import AuthenticationFailed, RequestTooLarge, status_for, vox_error_body


async def send_error(send: Send, exc: VoxError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(vox_error_body(exc)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_for(exc),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """With keys configured, every route but /health (and what `is_open` allows) needs
    `Authorization: Bearer <key>`."""

    OPEN_PATHS = frozenset({"/health", "/healthz"})

    def __init__(self, app: ASGIApp, keys: list[str], is_open: Callable[[str], bool] | None = None) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.is_open = is_open

    def _authorized(self, scope: Scope) -> tuple[bool, str]:
        headers = dict(scope.get("headers", []))
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False, (
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        candidate = token.strip().encode()
        if any(hmac.compare_digest(candidate, key) for key in self.keys):
            return True, ""
        shown = token.strip()
        masked = shown[:3] + "*" * max(0, len(shown) - 7) + shown[-4:] if len(shown) > 8 else "****"
        return False, f"Incorrect API key provided: {masked}."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] != "http"
            or scope["path"] in self.OPEN_PATHS
            or (self.is_open is not None and self.is_open(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        ok, message = self._authorized(scope)
        if ok:
            await self.app(scope, receive, send)
        else:
            await send_error(send, AuthenticationFailed(message))


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes while they are read, never buffering the rest.

    A declared Content-Length over the limit is refused before a byte is read; a chunked body is
    counted as it arrives and the read that crosses the limit raises RequestTooLarge, which the
    app's error handlers turn into the 413 response.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await send_error(send, RequestTooLarge(self.limit, int(declared)), [(b"connection", b"close")])
            return
        seen = 0

        async def counted_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise RequestTooLarge(self.limit, seen)
            return message

        await self.app(scope, counted_receive, send)
