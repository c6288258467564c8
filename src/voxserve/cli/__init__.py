"""The `voxserve` command line: serve, transcribe, speak, models."""

from voxserve.cli.main import app, main

__all__ = ["app", "main"]
