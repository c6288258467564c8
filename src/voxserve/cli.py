"""`voxserve serve | models`."""

from __future__ import annotations

import argparse
import sys

from voxserve import __version__
from voxserve.config import Settings


def _serve(args: argparse.Namespace) -> int:
    from voxserve.server.run import UnsafeBind, run_server

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
    try:
        run_server(Settings(**overrides))
    except UnsafeBind as exc:
        print(f"voxserve: {exc}", file=sys.stderr)
        return 2
    return 0


def _models(_: argparse.Namespace) -> int:
    from voxserve.runtime import Runtime

    # The same catalog the server builds: speech-to-text, voices, text-to-speech and chat, with aliases.
    for model_id, spec in Runtime.build(Settings()).registry.listing():
        target = "" if model_id == spec.id else f" -> {spec.id}"
        print(f"{spec.kind:6} {model_id}{target}")
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
