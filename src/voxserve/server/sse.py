"""Server-sent events as the OpenAI SDK reads them: `data: <one-line JSON>` and a blank line."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from voxserve.errors import VoxError
from voxserve.server.errors import error_body, vox_error_body

log = logging.getLogger(__name__)


def sse_event(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def _guarded(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    # Status 200 has gone out: a failure now is reported as an error event, then the stream ends.
    try:
        async for event in events:
            yield sse_event(event)
    except VoxError as exc:
        yield sse_event(vox_error_body(exc))
    except Exception:
        log.exception("error inside an event stream")
        yield sse_event(error_body("The server had an error while processing your request.", "server_error"))


def sse_response(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        _guarded(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
