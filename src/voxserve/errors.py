"""Errors the engines and request parsing raise, described without HTTP.

The server maps each class to a status code and the OpenAI error envelope; nothing below `server/`
knows about status codes.
"""

from __future__ import annotations


class VoxError(Exception):
    """Base class: a message for the client, plus the OpenAI `param` and `code` fields."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequest(VoxError):
    """The client sent something we cannot accept (HTTP 400)."""


class InvalidAudio(InvalidRequest):
    """The uploaded audio is empty, truncated or in a format we cannot decode."""


class ModelNotFound(VoxError):
    """No model, alias or configured path answers to this id (HTTP 404)."""

    def __init__(self, model: str, *, param: str | None = "model") -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param=param,
            code="model_not_found",
        )


class Overloaded(VoxError):
    """The engine's queue is full; the client should retry later (HTTP 429)."""

    error_type = "requests"

    def __init__(self, engine: str, retry_after: int) -> None:
        super().__init__(
            f"The {engine} engine is busy: too many requests are queued. Retry after {retry_after} s.",
            code="rate_limit_exceeded",
        )
        self.retry_after = retry_after


class ModelUnavailable(VoxError):
    """A configured model could not be loaded (HTTP 503): a server-side problem, not the client's."""

    error_type = "server_error"


class UpstreamError(VoxError):
    """The upstream server answered with an error: its status and message are passed on."""

    def __init__(self, status: int, message: str, type_: str | None, param: str | None, code: str | None) -> None:
        super().__init__(message, param=param, code=code)
        self.status = status
        if type_:
            self.error_type = type_


class UpstreamUnavailable(VoxError):
    """The upstream server could not be reached or did not answer in time (HTTP 502)."""

    error_type = "server_error"
