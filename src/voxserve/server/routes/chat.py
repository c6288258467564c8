"""POST /v1/chat/completions: text chat on the configured backend, with audio in and out."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from voxserve.engines.llama_chat import EmbeddedChat
from voxserve.errors import InvalidRequest
from voxserve.server.chat_audio import add_audio_usage, speak_answer, spoken_stream, text_stream
from voxserve.server.json_body import json_object
from voxserve.server.sse import sse_response
from voxserve.server.state import get_state

router = APIRouter()

# Fields that shape the audio around the chat; the backend only ever sees text.
_AUDIO_FIELDS = ("modalities", "audio")


def _modalities(body: dict[str, Any]) -> list[str]:
    modalities = body.get("modalities") or ["text"]
    if not isinstance(modalities, list) or any(m not in ("text", "audio") for m in modalities):
        raise InvalidRequest(
            'modalities must be a list of "text" and "audio".', param="modalities", code="invalid_value"
        )
    return modalities


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state = get_state(request)
    body = await json_object(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean.", param="stream", code="invalid_value")
    backend = state.chat
    if isinstance(backend, EmbeddedChat):
        backend.resolve(model)  # an unknown model is a 404 before any audio is transcribed

    voice = fmt = None
    if "audio" in _modalities(body):
        voice, fmt = state.voice_chat.voice(body.get("audio"))
        if stream and fmt != "pcm":
            raise InvalidRequest(
                "When streaming, audio.format must be pcm16.", param="audio.format", code="unsupported_value"
            )

    prepared = await state.voice_chat.prepare(body.get("messages"), flatten=isinstance(backend, EmbeddedChat))
    forward = {key: value for key, value in body.items() if key not in _AUDIO_FIELDS}
    forward["messages"] = prepared.messages

    if not stream:
        result = await backend.complete(forward)
        result["model"] = model
        seconds_out = 0.0
        if voice is not None and fmt is not None:
            seconds_out = await speak_answer(result, state.voice_chat, voice, fmt)
        result["usage"] = add_audio_usage(result.get("usage"), prepared.audio_seconds, seconds_out)
        return JSONResponse(result)

    chunks = await backend.open_stream(forward)
    if voice is None:
        return sse_response(text_stream(chunks, model, prepared.audio_seconds))
    template = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": model}
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return sse_response(
        spoken_stream(
            chunks,
            voice_chat=state.voice_chat,
            voice=voice,
            template=template,
            seconds_in=prepared.audio_seconds,
            include_usage=include_usage,
        )
    )
