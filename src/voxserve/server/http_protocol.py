"""uvicorn's HTTP protocol with a deadline for the request line and headers.

uvicorn closes idle keep-alive connections, but a new connection, or a request whose headers arrive a
byte at a time, has no deadline at all: enough of them hold the server's sockets forever (slowloris).
An ASGI middleware never sees this phase (the app is called once the headers are complete), so the
deadline is kept here, in a subclass of uvicorn's httptools protocol (uvicorn's default, installed by
`uvicorn[standard]`), and handed to `uvicorn.run(http=...)`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voxserve.server.errors import error_body

log = logging.getLogger(__name__)

# Request line and headers together; nginx allows 32 KB by default, h11 16 KB. httptools has no limit of
# its own, so a client could send headers as fast as it likes until the deadline, all kept in memory.
MAX_HEADER_BYTES = 64 * 1024


def _error_response(status: bytes, message: str) -> bytes:
    """A complete HTTP response with an OpenAI error body, for errors before the app has a request."""
    body = json.dumps(error_body(message, "invalid_request_error")).encode()
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_TIMEOUT_RESPONSE = _error_response(
    b"408 Request Timeout", "The request headers did not arrive in time (VOXSERVE_HEADER_TIMEOUT)."
)
_TOO_LARGE_RESPONSE = _error_response(
    b"431 Request Header Fields Too Large", f"The request line and headers exceed {MAX_HEADER_BYTES} bytes."
)


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Headers must be complete within `header_timeout` seconds of the connection opening (its first
    request) or of the first byte of a later request. A request with partial headers then gets a 408
    with an OpenAI error body; a connection that sent nothing is closed without a word, as an idle
    keep-alive connection is. The body is the app's to time (`server.read_deadlines`), except the
    unread rest of one the app answered without reading."""

    header_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial_request = False
        self._header_bytes = 0

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._partial_request:
            log.info("request headers from %s not complete after %g s: 408", self.client, self.header_timeout)
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._partial_request = True
        self._header_bytes = 0
        self._arm_header_deadline()

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            if not self.transport.is_closing():
                log.info("request headers from %s over %d bytes: 431", self.client, MAX_HEADER_BYTES)
                self._disarm_header_deadline()
                self.transport.write(_TOO_LARGE_RESPONSE)
                self.transport.close()
            # Stops the parser: httptools raises it as a parser error, which uvicorn answers with
            # send_400_response, a no-op below once the transport is closing.
            raise ValueError("request headers too large")

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        # uvicorn's own answer to bytes that are not HTTP is text/plain; ours is the OpenAI envelope.
        if self.transport.is_closing():
            return
        self.transport.write(_error_response(b"400 Bad Request", f"{msg} It could not be parsed as HTTP/1.1."))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._partial_request = False
        self._disarm_header_deadline()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm_header_deadline()  # the drain deadline below, if armed
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Answered before its body was read (401, 413, 408...): uvicorn reads and drops the rest, and
        # every piece resets its keep-alive timer, so a body sent a byte at a time would keep the
        # connection forever. The rest must arrive within the header deadline.
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self._arm_header_deadline()


def protocol_with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """A protocol class for `uvicorn.run(http=...)` (uvicorn instantiates it per connection)."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": seconds})
