"""`voxserve serve | models`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from voxserve import __version__
from voxserve.config import Settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from voxserve.server.app import create_asgi

    overrides = {
        key: value
        for key, value in {
            "host": args.host,
            "port": args.port,
            "allow_unauthenticated": args.allow_unauthenticated or None,
            "preload": args.preload,
            "log_level": args.log_level,
        }.items()
        if value is not None
    }
    settings = Settings(**overrides)
    if not settings.api_keys and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        print(
            f"voxserve: refusing to listen on {settings.host} without API keys. Set VOXSERVE_API_KEYS, "
            "or pass --allow-unauthenticated to serve anyone who can reach this address.",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_asgi(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0


def _models(_: argparse.Namespace) -> int:
    from voxserve.engines.catalog import build_registry

    for model_id, spec in build_registry(Settings()).listing():
        print(model_id if model_id == spec.id else f"{model_id} -> {spec.id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voxserve", description="The OpenAI Audio API on local models.")
    parser.add_argument("--version", action="version", version=f"voxserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, env VOXSERVE_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, env VOXSERVE_PORT)")
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="allow a non-loopback --host with no VOXSERVE_API_KEYS",
    )
    serve.add_argument("--preload", nargs="*", help="model ids to load at start (env VOXSERVE_PRELOAD)")
    serve.add_argument("--log-level", help="debug, info, warning, error (env VOXSERVE_LOG_LEVEL)")
    serve.set_defaults(func=_serve)

    models = sub.add_parser("models", help="list model ids and aliases")
    models.set_defaults(func=_models)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
