"""Running the ASGI app under uvicorn: the one place that knows how voxserve is served."""

from __future__ import annotations

import ipaddress
import logging
import logging.config
from typing import Any

from voxserve.config import Settings


class UnsafeBind(RuntimeError):
    """A non-loopback address without API keys and without an explicit opt-in."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    if not settings.api_keys and not is_loopback(settings.host) and not settings.allow_unauthenticated:
        raise UnsafeBind(
            f"refusing to listen on {settings.host} without API keys. Set VOXSERVE_API_KEYS, "
            "or pass --allow-unauthenticated to serve anyone who can reach this address."
        )


def run_server(settings: Settings) -> None:
    """Serve until interrupted. Raises UnsafeBind before binding anything."""
    import uvicorn

    from voxserve.server.app import create_asgi
    from voxserve.server.http_protocol import protocol_with_header_timeout

    check_bind(settings)
    options: dict[str, Any] = {}
    if settings.log_format == "json":
        from voxserve.server.log_config import json_log_config

        config = json_log_config(settings.log_level)
        logging.config.dictConfig(config)  # now, so that building the app logs JSON too
        options = {"log_config": config, "access_log": False}  # voxserve writes its own access line
    else:
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_asgi(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        **options,
        http=protocol_with_header_timeout(settings.header_timeout),
    )
