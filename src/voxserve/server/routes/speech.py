"""POST /v1/audio/speech and GET /v1/audio/voices."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask

from voxserve.audio.encode import OUTPUT_FORMATS
from voxserve.engines.text_to_speech import SpeechStream, input_tokens
from voxserve.errors import InvalidRequest
from voxserve.server.disconnect import unless_disconnected
from voxserve.server.errors import invalid_from_validation
from voxserve.server.json_body import json_object
from voxserve.server.sse import sse_response
from voxserve.server.state import get_state

router = APIRouter()


class VoiceId(BaseModel):
    id: str


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, max_length=4096)
    voice: str | VoiceId
    instructions: str | None = Field(None, max_length=4096)
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    # voxserve extension: false sends the whole file at once, so wav and flac headers carry true lengths.
    stream: bool = True

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceId) else self.voice


def _check_model_features(req: SpeechRequest) -> None:
    # OpenAI's tts-1 models take neither instructions nor SSE; gpt-4o-mini-tts and local ids do.
    if req.model.startswith("tts-1"):
        if req.instructions:
            raise InvalidRequest(
                f"instructions are not supported with `{req.model}`; use `gpt-4o-mini-tts`.",
                param="instructions",
                code="unsupported_value",
            )
        if req.stream_format == "sse":
            raise InvalidRequest(
                f"stream_format `sse` is not supported with `{req.model}`; use `gpt-4o-mini-tts`.",
                param="stream_format",
                code="unsupported_value",
            )


async def _sse_events(stream: SpeechStream, text: str) -> AsyncIterator[dict[str, Any]]:
    async for chunk in stream.chunks():
        yield {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}
    tokens_in = input_tokens(text)
    tokens_out = stream.output_tokens
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
    yield {"type": "speech.audio.done", "usage": usage}


@router.post("/v1/audio/speech")
async def create_speech(request: Request) -> Response:
    state = get_state(request)
    try:
        req = SpeechRequest.model_validate(await json_object(request))
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors())) from exc
    if not req.input.strip():
        raise InvalidRequest("input must contain text to speak.", param="input", code="invalid_value")
    state.tts.resolve_model(req.model)
    _check_model_features(req)
    voice = state.tts.voices.resolve(req.voice_name)
    media_type = OUTPUT_FORMATS[req.response_format].media_type
    if not req.stream and req.stream_format == "audio":
        audio, _ = await unless_disconnected(
            request, state.tts.synthesize(voice, req.input, req.speed, req.response_format, shed=True)
        )
        return Response(audio, media_type=media_type)
    stream = await state.tts.open_stream(voice, req.input, req.speed, req.response_format, shed=True)
    if req.stream_format == "sse":
        response: Response = sse_response(_sse_events(stream, req.input))
    else:
        response = StreamingResponse(stream.chunks(), media_type=media_type)
    # Releases the engine slot even if the client left before the first chunk was sent.
    response.background = BackgroundTask(stream.close)
    return response


@router.get("/v1/audio/voices")
async def list_voices(request: Request) -> dict[str, Any]:
    book = get_state(request).tts.voices
    data: list[dict[str, Any]] = [
        {"id": name, "object": "audio.voice", "voice": name, "sample_rate": e.sample_rate, "kind": "local"}
        for name, e in sorted(book.voices.items())
    ]
    data += [
        {"id": name, "object": "audio.voice", "voice": local, "kind": "openai"} for name, local in book.mapping.items()
    ]
    return {"object": "list", "data": data}
