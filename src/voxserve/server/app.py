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
from voxserve.server.routes import chat as chat_routes
from voxserve.server.routes import health, models, realtime, speech, transcriptions

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
    app.include_router(realtime.router)
    return app


def create_asgi(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings()
    fastapi_app = create_app(settings)
    hub = fastapi_app.state.vox.realtime
    app: ASGIApp = BodyLimitMiddleware(fastapi_app, settings.max_upload_bytes)
    app = ApiKeyMiddleware(app, settings.api_keys, lambda token: hub.minter.verify(token, hub.clock()))
    return RequestIdMiddleware(app)
