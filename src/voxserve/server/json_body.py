"""Reading a JSON request body: refused with a 400 unless it is a JSON object."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request

from voxserve.errors import InvalidRequest
from voxserve.server.metrics import note_requested_model


async def json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        shown = content_type or "none"
        raise InvalidRequest(f"This endpoint takes a JSON body (got Content-Type `{shown}`).")
    raw = await request.body()
    try:
        # A chat body can carry megabytes of base64 audio: parse those off the event loop.
        body = json.loads(raw) if len(raw) < 256 * 1024 else await asyncio.to_thread(json.loads, raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    note_requested_model(request, body.get("model"))
    return body
