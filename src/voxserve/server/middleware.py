"""ASGI middleware that wraps the whole app: request ids, API-key auth (HTTP and WebSocket) and the upload
size limit.

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
from voxserve.realtime.tokens import EphemeralKey, looks_ephemeral
from voxserve.server.errors import AuthenticationFailed, RequestTooLarge, status_for, vox_error_body

EphemeralVerifier = Callable[[str], EphemeralKey | None]
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."


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

    # The messages that open a response: an HTTP response, a WebSocket's accept, or its refusal.
    STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] in self.STARTS:
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


class ApiKeyMiddleware:
    """With keys configured, every route but /health (and what `is_open` allows) needs `Authorization: Bearer <key>`.

    WebSocket handshakes are checked too, before they are accepted, and may also carry the key as the
    browser subprotocol `openai-insecure-api-key.<key>`. Ephemeral keys (`ek_…`) open `/v1/realtime`
    only: verified by `verify_ephemeral`, the key is left in `scope["state"]["ephemeral_key"]` for the
    route, which starts the session from the config it carries. An ephemeral key that is presented is
    always checked, even on a server without keys: an expired one is refused, not ignored.
    """

    OPEN_PATHS = frozenset({"/health", "/healthz"})
    REALTIME_PATH = "/v1/realtime"

    def __init__(
        self,
        app: ASGIApp,
        keys: list[str],
        verify_ephemeral: EphemeralVerifier | None = None,
        is_open: Callable[[str], bool] | None = None,
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys]
        self.verify_ephemeral = verify_ephemeral
        self.is_open = is_open

    @staticmethod
    def _token(scope: Scope) -> str | None:
        headers = dict(scope.get("headers", []))
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        if scope["type"] == "websocket":
            for protocol in scope.get("subprotocols", []):
                if protocol.startswith(INSECURE_KEY_PROTOCOL):
                    return protocol[len(INSECURE_KEY_PROTOCOL) :].strip() or None
        return None

    def _check(self, scope: Scope) -> str | None:
        """None when the request may go on; otherwise the message of the 401."""
        token = self._token(scope)
        if token is not None and looks_ephemeral(token):
            if scope["type"] != "websocket" or scope["path"].rstrip("/") != self.REALTIME_PATH:
                return "Ephemeral keys (ek_...) are accepted on /v1/realtime only. Use an API key here."
            key = self.verify_ephemeral(token) if self.verify_ephemeral is not None else None
            if key is None:
                return "The ephemeral key is invalid or has expired. Mint a new one with /v1/realtime/client_secrets."
            scope.setdefault("state", {})["ephemeral_key"] = key
            return None
        if not self.keys:
            return None
        if token is None:
            return (
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        candidate = token.encode()
        if any(hmac.compare_digest(candidate, key) for key in self.keys):
            return None
        masked = token[:3] + "*" * max(0, len(token) - 7) + token[-4:] if len(token) > 8 else "****"
        return f"Incorrect API key provided: {masked}."

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or scope["path"] in self.OPEN_PATHS
            or (self.is_open is not None and self.is_open(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        message = self._check(scope)
        if message is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await deny_websocket(scope, send, AuthenticationFailed(message))
        else:
            await send_error(send, AuthenticationFailed(message))


async def deny_websocket(scope: Scope, send: Send, exc: VoxError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Refuse a WebSocket handshake with the OpenAI error envelope and its HTTP status."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})  # the server answers 403
        return
    body = json.dumps(vox_error_body(exc)).encode()
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status_for(exc),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "websocket.http.response.body", "body": body})


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
