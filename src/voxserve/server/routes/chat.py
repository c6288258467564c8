"""POST /v1/chat/completions: text chat on the configured backend, with audio in and out."""

from __future__ import annotations

import asyncio
import secrets
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from voxserve.engines.llama_chat import EmbeddedChat, llama_arguments
from voxserve.server.chat_audio import add_audio_usage, speak_answer, spoken_stream, text_stream
from voxserve.server.chat_request import ChatRequest
from voxserve.server.json_body import json_object
from voxserve.server.sse import sse_response
from voxserve.server.state import get_state

router = APIRouter()

# Fields that shape the audio around the chat; the backend only ever sees text.
_AUDIO_FIELDS = ("modalities", "audio")


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    state = get_state(request)
    body = await json_object(request)
    # Everything is checked before anything runs: a streamed request's mistakes are a 400, never a 200
    # stream that carries an error. Off the loop: a body can hold megabytes of text.
    req = await asyncio.to_thread(ChatRequest.parse, body)
    backend = state.chat
    embedded = isinstance(backend, EmbeddedChat)
    if embedded:
        # An unknown model, tools or n > 1: refused before any audio is transcribed.
        backend.resolve(req.model)
        llama_arguments(body)

    voice = fmt = None
    if req.wants_audio and req.audio is not None:
        voice, fmt = state.voice_chat.voice(req.voice, req.audio.format)

    prepared = await state.voice_chat.prepare(body["messages"], flatten=embedded)
    messages = state.spoken.instruct(prepared.messages) if voice is not None else prepared.messages
    # The body as the client sent it (unknown fields included, for an upstream), with text for audio.
    forward = {key: value for key, value in body.items() if key not in _AUDIO_FIELDS}
    forward["messages"] = messages

    if not req.stream:
        result = await backend.complete(forward)
        result["model"] = req.model
        seconds_out = 0.0
        if voice is not None and fmt is not None:
            seconds_out = await speak_answer(result, state.voice_chat, voice, fmt)
        result["usage"] = add_audio_usage(result.get("usage"), prepared.audio_seconds, seconds_out)
        return JSONResponse(result)

    # Opening admits the request and, on the embedded model, evaluates the prompt: its errors are still
    # ordinary error responses.
    chunks = await backend.open_stream(forward)
    if voice is None:
        return sse_response(text_stream(chunks, req.model, prepared.audio_seconds))
    template = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": req.model}
    return sse_response(
        spoken_stream(
            state.spoken.wrap(chunks, voice),
            answers=state.voice_chat.answers,
            template=template,
            seconds_in=prepared.audio_seconds,
            include_usage=req.include_usage,
        )
    )
