"""GET /health: answers from the event loop alone, so it stays fast while engines are busy."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from voxserve.server.state import get_state

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    state = get_state(request)
    return {
        "status": "ok",
        "stt": {"active": state.stt.gate.active, "queued": state.stt.gate.queued},
        "tts": {"active": state.tts.gate.active, "queued": state.tts.gate.queued},
        "chat": {"active": state.chat_gate.active, "queued": state.chat_gate.queued},
        "loaded_models": state.registry.loaded_ids(),
        "realtime_sessions": state.realtime.active_sessions,
    }
