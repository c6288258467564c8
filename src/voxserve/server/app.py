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
from voxserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from voxserve.server.read_deadlines import BodyDeadlineMiddleware
from voxserve.server.routes import chat as chat_routes
from voxserve.server.routes import health, models, speech, transcriptions

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
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(transcriptions.router)
    app.include_router(speech.router)
    app.include_router(chat_routes.router)
    return app


def create_asgi(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    app: ASGIApp = create_app(settings)
    app = BodyLimitMiddleware(app, settings.max_upload_bytes)
    app = BodyDeadlineMiddleware(app, settings.body_idle_timeout, settings.body_timeout)
    app = ApiKeyMiddleware(app, settings.api_keys)
    return RequestIdMiddleware(app)
