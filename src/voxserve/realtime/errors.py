"""A client event the session cannot accept: becomes an `error` event, and the session stays open."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

UNION_TAGS = frozenset({"server_vad", "semantic_vad"})


class ClientEventError(Exception):
    def __init__(
        self,
        message: str,
        *,
        code: str | None = "invalid_value",
        param: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = type_


def from_validation(exc: ValidationError, prefix: str) -> ClientEventError:
    """The first pydantic error, with `param` as a dotted path under `prefix` (e.g. `session.audio`)."""
    first: dict[str, Any] = dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": "invalid value"}
    # Drop pydantic's union branch tags (a discriminator value, "function-after[...]") from the path.
    parts = [
        str(p)
        for p in first.get("loc", ())
        if not (isinstance(p, str) and ("[" in p or p[:1].isupper() or p in UNION_TAGS))
    ]
    param = ".".join([prefix, *parts]) if prefix else ".".join(parts)
    kind = first.get("type")
    if kind == "extra_forbidden":
        return ClientEventError(f"Unknown parameter: '{param}'.", code="unknown_parameter", param=param)
    if kind == "missing":
        return ClientEventError(
            f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
        )
    if kind == "union_tag_invalid" or kind == "literal_error" or kind == "enum":
        code = "unsupported_value"
    else:
        code = "invalid_value"
    shown = first.get("input")
    got = f" (got {shown!r})" if isinstance(shown, str | int | float | bool) else ""
    return ClientEventError(f"Invalid value for '{param}': {first.get('msg')}{got}.", code=code, param=param)
