"""Building the ASGI app: the runtime's engines, routes, error mapping, and the outer middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from voxserve import __version__
from voxserve.config import Settings
from voxserve.runtime import Runtime
from voxserve.server.errors import install_error_handlers
from voxserve.server.metrics import Metrics, MetricsMiddleware, metrics_need_key
from voxserve.server.metrics import router as metrics_router
from voxserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from voxserve.server.read_deadlines import BodyDeadlineMiddleware
from voxserve.server.routes import chat as chat_routes
from voxserve.server.routes import health, models, realtime, speech, transcriptions
from voxserve.server.routes.playground import is_playground_path, mount_playground

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.preload()
        sweeper = asyncio.create_task(runtime.sweep_idle_models())
        try:
            yield
        finally:
            sweeper.cancel()
            await runtime.aclose()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.vox = runtime
    app.state.metrics = Metrics(runtime)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(transcriptions.router)
    app.include_router(speech.router)
    app.include_router(chat_routes.router)
    app.include_router(realtime.router)
    app.include_router(metrics_router)
    mount_playground(app)
    return app


def create_asgi(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    fastapi_app = create_app(settings)
    hub = fastapi_app.state.vox.realtime
    app: ASGIApp = BodyLimitMiddleware(fastapi_app, settings.max_upload_bytes)
    app = BodyDeadlineMiddleware(app, settings.body_idle_timeout, settings.body_timeout)
    metrics_open = not metrics_need_key(settings)
    app = ApiKeyMiddleware(
        app,
        settings.api_keys,
        lambda token: hub.minter.verify(token, hub.clock()),
        is_open=lambda path: is_playground_path(path) or (metrics_open and path == "/metrics"),
    )
    # Outside the key check, so refused requests (401, 413) are measured too.
    app = MetricsMiddleware(
        app, fastapi_app.state.metrics, fastapi_app.routes, access_log=settings.log_format == "json"
    )
    return RequestIdMiddleware(app)
