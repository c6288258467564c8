"""Reading a JSON request body: refused with a 400 unless it is a JSON object of sane depth."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import Request

from voxserve.errors import InvalidRequest
from voxserve.server.metrics import note_requested_model

# No OpenAI request comes near this (a structured-output schema may nest 10 levels); a deeper body
# would only reach code that recurses over it (copying messages, re-encoding them for an upstream)
# and fail there instead of here.
MAX_JSON_DEPTH = 64


def _too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` nests containers deeper than `limit`, walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _parse(raw: bytes) -> Any:
    # Strict JSON: NaN and Infinity are Python's extensions, and would reach the engines as numbers.
    body = json.loads(raw, parse_constant=_refuse_constant)
    if _too_deep(body):
        raise RecursionError
    return body


async def json_object(request: Request) -> dict[str, Any]:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        shown = content_type or "none"
        raise InvalidRequest(f"This endpoint takes a JSON body (got Content-Type `{shown}`).")
    raw = await request.body()
    try:
        # A chat body can carry megabytes of base64 audio: parse those off the event loop.
        body = _parse(raw) if len(raw) < 256 * 1024 else await asyncio.to_thread(_parse, raw)
    except RecursionError as exc:  # the parser's own limit (about 1,000 levels) or ours
        raise InvalidRequest(
            f"The JSON body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep.", code="invalid_value"
        ) from exc
    except ValueError as exc:  # bad syntax or encoding, NaN, an integer of over 4,300 digits
        raise InvalidRequest(f"The body is not valid JSON: {exc}.") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    note_requested_model(request, body.get("model"))
    return body
