"""A client's WebSocket frame to its event object, or the `error` a client gets for it."""

from __future__ import annotations

import json
from typing import Any

from voxserve.realtime.errors import ClientEventError

# Frames up to this size that are not strict JSON get a second, lenient parse (trailing commas, as
# in the seed's example payload); an audio append is never parsed leniently.
LENIENT_JSON_LIMIT = 64 * 1024


def parse_frame(frame: str | bytes) -> dict[str, Any]:
    try:
        text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
    except UnicodeDecodeError as exc:
        raise ClientEventError("The event is not UTF-8 text.", code="invalid_json") from exc
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        event = lenient_parse(text, exc)
    if not isinstance(event, dict):
        raise ClientEventError("An event must be a JSON object.", code="invalid_event")
    return event


def lenient_parse(text: str, error: json.JSONDecodeError) -> Any:
    if len(text) <= LENIENT_JSON_LIMIT:
        import json5

        try:
            return json5.loads(text)
        except ValueError:
            pass
    raise ClientEventError(
        f"We could not parse the JSON body of your event: {error.msg} (line {error.lineno}, column {error.colno}).",
        code="invalid_json",
    )
