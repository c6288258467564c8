"""What the routes share: the runtime (settings and engines), built once per app."""

from __future__ import annotations

from fastapi import Request

from voxserve.runtime import Runtime


def get_state(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.vox
    return runtime
