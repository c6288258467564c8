"""The OpenAI error envelope, and the mapping from every failure to it.

A client mistake is never a 500 and never FastAPI's default `detail` body.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from voxserve.errors import (
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    Overloaded,
    UpstreamError,
    UpstreamUnavailable,
    VoxError,
)

log = logging.getLogger(__name__)


class RequestTooLarge(VoxError):
    error_type = "server_error"  # what OpenAI sends for its 413

    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"Maximum content size limit ({limit}) exceeded ({seen} bytes read)")


class RequestTimeout(VoxError):
    """The client sent its body too slowly (HTTP 408; the connection is closed)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="request_timeout")


class AuthenticationFailed(VoxError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


_STATUS: list[tuple[type[VoxError], int]] = [
    (RequestTooLarge, 413),
    (RequestTimeout, 408),
    (AuthenticationFailed, 401),
    (ModelNotFound, 404),
    (Overloaded, 429),
    (ModelUnavailable, 503),
    (UpstreamUnavailable, 502),
    (InvalidRequest, 400),
]


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def vox_error_body(exc: VoxError) -> dict[str, Any]:
    return error_body(exc.message, exc.error_type, exc.param, exc.code)


def status_for(exc: VoxError) -> int:
    if isinstance(exc, UpstreamError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def vox_error_response(exc: VoxError) -> JSONResponse:
    headers = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
        headers["retry-after-ms"] = str(exc.retry_after * 1000)
    if isinstance(exc, RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body is never read: the connection is done
    return JSONResponse(vox_error_body(exc), status_code=status_for(exc), headers=headers)


# Pydantic puts the union member it tried into `loc` ("str", "VoiceId", "literal['auto']"); the
# client only wants to know which of its fields was wrong. Our field names are all snake_case.
_UNION_TAG = re.compile(r"^(str|int|float|bool|dict|list|none|[A-Z]\w*|.*[\[(].*)$")


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "form") and not (isinstance(p, str) and _UNION_TAG.match(p))
    ]
    if not parts:
        return None
    param = parts[0]
    for part in parts[1:]:
        param += f"[{part}]" if part.isdigit() else f".{part}"
    return param


def invalid_from_validation(errors: list[Any]) -> InvalidRequest:
    """The first pydantic error as an OpenAI-style 400 with `param` naming the field."""
    first = errors[0] if errors else {"loc": (), "msg": "Invalid request"}
    param = _loc_to_param(tuple(first.get("loc", ())))
    message = str(first.get("msg", "Invalid request"))
    if first.get("type") == "missing":
        return InvalidRequest(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if param:
        got = first.get("input")
        shown = json.dumps(got)[:200] if isinstance(got, str | int | float | bool) else None
        message = f"Invalid value for '{param}': {message}" + (f" (got {shown})." if shown else ".")
    code = "unsupported_value" if first.get("type") in ("literal_error", "enum") else "invalid_value"
    return InvalidRequest(message, param=param, code=code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxError)
    async def _vox(_: Request, exc: VoxError) -> JSONResponse:
        return vox_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return vox_error_response(invalid_from_validation(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        return vox_error_response(invalid_from_validation(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        if exc.status_code == 404:
            message = "Not found: no such route. See /docs for the routes this server answers."
        elif exc.status_code == 405:
            message = "Method not allowed for this route."
        return JSONResponse(error_body(message, type_), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request: Request, _: ClientDisconnect) -> Response:
        # Nobody is left to answer: one line in the log, and a response nobody will read.
        log.info(
            "client closed the request: %s %s (%s)",
            request.method,
            request.url.path,
            request.scope.get("state", {}).get("request_id", "-"),
        )
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("The server had an error while processing your request.", "server_error"),
            status_code=500,
        )
