"""Building the ASGI app: engines from settings, routes, error mapping, and the outer middleware."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.types import ASGIApp

from voxserve import __version__
from voxserve.config import Settings
from voxserve.engines.admission import EngineGate
from voxserve.engines.catalog import add_chat_models, build_registry, build_voices
from voxserve.engines.llama_chat import EmbeddedChat
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.spoken_answers import SpokenAnswers
from voxserve.engines.text_to_speech import TextToSpeech
from voxserve.engines.upstream_chat import UpstreamChat
from voxserve.engines.voice_chat import VoiceChat
from voxserve.server.errors import install_error_handlers
from voxserve.server.middleware import ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from voxserve.server.routes import chat as chat_routes
from voxserve.server.routes import health, models, speech, transcriptions
from voxserve.server.state import AppState

log = logging.getLogger(__name__)


async def _sweep_idle_models(state: AppState) -> None:
    interval = max(1.0, min(30.0, state.settings.model_ttl / 4)) if state.settings.model_ttl >= 0 else None
    if interval is None:
        return
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(state.registry.sweep)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    registry = build_registry(settings)
    voices = build_voices(settings, registry)
    stt_gate = EngineGate("speech-to-text", settings.stt_concurrency, settings.stt_queue)
    tts_gate = EngineGate("text-to-speech", settings.tts_concurrency, settings.tts_queue)
    # llama.cpp contexts are not thread-safe: one generation at a time, the rest queue.
    chat_gate = EngineGate("chat", 1, settings.chat_queue)
    add_chat_models(settings, registry)
    chat: EmbeddedChat | UpstreamChat
    if settings.chat_upstream_url:
        chat = UpstreamChat(
            settings.chat_upstream_url,
            api_key=settings.chat_upstream_api_key,
            model_map=settings.chat_upstream_model_map,
            default_model=settings.chat_upstream_model,
            timeout=settings.chat_upstream_timeout,
            connect_timeout=settings.chat_upstream_connect_timeout,
        )
    else:
        chat = EmbeddedChat(registry, chat_gate)
    stt = SpeechToText(registry, stt_gate)
    tts = TextToSpeech(registry, tts_gate, voices)
    answers = SpokenAnswers(ttl=settings.audio_answer_ttl, max_entries=settings.audio_answer_max)
    state = AppState(
        settings=settings,
        registry=registry,
        stt=stt,
        tts=tts,
        chat=chat,
        chat_gate=chat_gate,
        voice_chat=VoiceChat(stt, tts, answers, settings.default_stt_model, settings.chat_stt_beam_size),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        for model_id in settings.preload:
            log.info("preloading %s", model_id)
            await asyncio.to_thread(registry.preload, model_id)
        sweeper = asyncio.create_task(_sweep_idle_models(state))
        try:
            yield
        finally:
            sweeper.cancel()
            stt_gate.shutdown()
            tts_gate.shutdown()
            chat_gate.shutdown()
            if isinstance(chat, UpstreamChat):
                await chat.close()

    app = FastAPI(title="voxserve", version=__version__, lifespan=lifespan)
    app.state.vox = state
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
    app = ApiKeyMiddleware(app, settings.api_keys)
    return RequestIdMiddleware(app)
