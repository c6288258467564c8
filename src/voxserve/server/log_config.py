"""Logging for `voxserve serve`: uvicorn's usual text lines, or one JSON object per line for operators.

JSON mode replaces uvicorn's access line with voxserve's own (from the metrics middleware), which
carries the request id, the model, the status and the timings as fields.
"""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

_JSON_FIELDS = "{asctime}{levelname}{name}{message}"


def json_log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn.run: every logger, uvicorn's included, to stderr as JSON."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": _JSON_FIELDS,
                "style": "{",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                # uvicorn repeats each message with terminal colour codes: not for a log file.
                "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
            }
        },
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }
