"""The Realtime API's wire: the WebSocket at /v1/realtime (a pump between frames and a session machine)
and the REST routes that mint ephemeral keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from voxserve.errors import InvalidRequest, Overloaded, VoxError
from voxserve.realtime.config import render_beta_transcription_session, render_ga_transcription_session, token_payload
from voxserve.realtime.conversation import ConversationSession
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.hub import RealtimeHub, SessionsFull
from voxserve.realtime.protocol import Dialect, EventFactory, new_id
from voxserve.realtime.response_runner import run_response
from voxserve.realtime.session import RealtimeSession
from voxserve.realtime.tokens import EphemeralKey, KeyTooLarge
from voxserve.realtime.transcription import with_model
from voxserve.realtime.turn_decoding import DecodeJob
from voxserve.server.json_body import json_object
from voxserve.server.middleware import INSECURE_KEY_PROTOCOL, deny_websocket
from voxserve.server.state import get_state

log = logging.getLogger(__name__)
router = APIRouter()

BETA_PROTOCOL = "openai-beta.realtime-v1"
DEFAULT_KEY_SECONDS = 600


def _dialect(websocket: WebSocket) -> Dialect:
    beta_header = "realtime=v1" in websocket.headers.get("openai-beta", "").replace(" ", "")
    return Dialect.BETA if beta_header or BETA_PROTOCOL in websocket.scope.get("subprotocols", []) else Dialect.GA


def _subprotocol(websocket: WebSocket) -> str | None:
    """Browsers offer `realtime` (with the key and beta markers): the answer must be `realtime`, or
    Chrome drops the connection. Nothing offered, nothing answered."""
    offered = websocket.scope.get("subprotocols", [])
    if "realtime" in offered or any(p.startswith(INSECURE_KEY_PROTOCOL) or p == BETA_PROTOCOL for p in offered):
        return "realtime"
    return None


class SessionsFullError(Overloaded):
    def __init__(self, message: str) -> None:
        super().__init__("realtime", 1)
        self.message = f"Too many realtime sessions: {message}. Retry later."
        self.args = (self.message,)


@router.websocket("/v1/realtime")
async def realtime_socket(websocket: WebSocket) -> None:
    hub: RealtimeHub = websocket.app.state.vox.realtime
    key: EphemeralKey | None = websocket.scope.get("state", {}).get("ephemeral_key")
    query = websocket.query_params
    transcription = query.get("intent") == "transcription" or (key is not None and key.kind == "transcription")
    try:
        hub.open()
    except SessionsFull as exc:
        await deny_websocket(websocket.scope, websocket.send, SessionsFullError(str(exc)), [(b"retry-after", b"1")])
        return
    try:
        await websocket.accept(subprotocol=_subprotocol(websocket))
        dialect = _dialect(websocket)
        model = query.get("model")
        if not transcription and key is None and model and _is_transcription_model(websocket, model):
            transcription = True  # `?model=gpt-4o-transcribe` without the intent: what else could it mean
        if transcription:
            session = _open_transcription(hub, dialect, key, model)
        else:
            opened = await _open_conversation(websocket, hub, dialect, key, model)
            if opened is None:
                return
            session = opened
        await _pump(websocket, hub, session)
    finally:
        hub.release()


def _is_transcription_model(websocket: WebSocket, model: str) -> bool:
    registry = websocket.app.state.vox.registry
    try:
        registry.resolve(model, kind="realtime")
        return False
    except VoxError:
        pass
    try:
        registry.resolve(model, kind="stt")
        return True
    except VoxError:
        return False


async def _open_conversation(
    websocket: WebSocket, hub: RealtimeHub, dialect: Dialect, key: EphemeralKey | None, model: str | None
) -> RealtimeSession | None:
    conversations = hub.conversations
    events = EventFactory(dialect)
    error = None
    if conversations is None:
        error = events.error("Conversation sessions are not available on this server.", code="unsupported_session_type")
    elif model:
        try:
            websocket.app.state.vox.registry.resolve(model, kind="realtime")
        except VoxError as exc:
            error = events.error(exc.message, code=exc.code or "model_not_found", param="model")
    if error is None:
        assert conversations is not None
        try:
            config = conversations.config(key.session if key is not None else None, model)
        except ClientEventError as exc:
            error = events.error(exc.message, code=exc.code, param=exc.param)
    if error is not None:
        await websocket.send_text(json.dumps(error))
        await websocket.close(code=1008, reason="the session could not be opened")
        return None
    secret = {"value": key.value, "expires_at": key.expires_at} if key is not None else None
    return conversations.session(dialect, config, secret)


def _open_transcription(
    hub: RealtimeHub, dialect: Dialect, key: EphemeralKey | None, model: str | None
) -> RealtimeSession:
    config = None
    secret = None
    if key is not None:
        secret = {"value": key.value, "expires_at": key.expires_at}
        if key.kind == "transcription":
            config = hub.transcription_config(key.session)
    if config is None:
        config = hub.transcription_config(None)
        if model:
            with contextlib.suppress(VoxError):
                hub.stt.resolve(model)  # `?model=` naming a transcription model picks it
                config = with_model(config, model)
    return hub.transcription_session(dialect, config, secret)


async def _pump(websocket: WebSocket, hub: RealtimeHub, session: RealtimeSession) -> None:
    """Frames in, events out; decode jobs on the engines. Every call into the session holds `lock`, so
    frames and decode results reach it one at a time and its events go out in order."""
    loop = asyncio.get_running_loop()
    lock = asyncio.Lock()
    tasks: set[asyncio.Task[None]] = set()

    conversation = session if isinstance(session, ConversationSession) else None
    responses: dict[str, asyncio.Task[None]] = {}

    async def flush() -> None:
        for event in session.take_events():
            await websocket.send_text(json.dumps(event))
        for job in session.take_jobs():
            task = asyncio.create_task(run(job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if conversation is not None:
            _respond(conversation)

    def _respond(conversation: ConversationSession) -> None:
        # A cancelled response stops generating and speaking now; a new one starts on the engines.
        for response_id in conversation.take_cancels():
            task = responses.pop(response_id, None)
            if task is not None:
                task.cancel()
        for response in conversation.take_responses():
            assert hub.conversations is not None
            task = asyncio.create_task(run_response(hub.conversations, conversation, response, deliver))
            responses[response.response_id] = task
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            task.add_done_callback(lambda _, rid=response.response_id: responses.pop(rid, None))

    async def deliver(call: Any, *args: Any) -> None:
        async with lock:
            call(*args)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await flush()

    async def run(job: DecodeJob) -> None:
        result: Any
        try:
            if job.kind == "partial":
                result = await hub.runner.partial(job.spec, job.audio, job.options)
            else:
                result = await hub.runner.final(job.spec, job.audio, job.options)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported to the client as `transcription.failed`
            result = exc
        async with lock:
            session.decoded(job, result)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                await flush()

    try:
        async with lock:
            session.start()
            await flush()
        while True:
            remaining = session.expires_at - hub.clock()
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=max(0.0, remaining))
            except TimeoutError:
                async with lock:
                    await websocket.send_text(
                        json.dumps(session.events.error("The session has expired.", code="session_expired"))
                    )
                await websocket.close(code=1000, reason="session expired")
                return
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("text") if message.get("text") is not None else message.get("bytes")
            if frame is None:
                continue
            async with lock:
                await loop.run_in_executor(hub.audio_executor, session.receive, frame)
                await flush()
    except WebSocketDisconnect:
        return
    finally:
        for task in list(tasks):
            task.cancel()
        session.close()


# --- ephemeral keys -------------------------------------------------------------------------------


def _expiry(hub: RealtimeHub, seconds: Any, param: str) -> int:
    if seconds is None:
        seconds = DEFAULT_KEY_SECONDS
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 10 <= seconds <= 7200:
        raise InvalidRequest(
            f"Invalid '{param}': expected an integer from 10 to 7200 (seconds).", param=param, code="invalid_value"
        )
    return int(hub.clock()) + seconds


def _expires_after(body: dict[str, Any], field: str, param: str) -> Any:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    anchor = value.get("anchor", "created_at")
    if anchor != "created_at":
        raise InvalidRequest(
            f"Invalid '{param}.anchor': only 'created_at' is supported.", param=f"{param}.anchor", code="invalid_value"
        )
    return value.get("seconds")


def _client_event_to_http(exc: ClientEventError) -> InvalidRequest:
    return InvalidRequest(exc.message, param=exc.param, code=exc.code)


def _mint_transcription(hub: RealtimeHub, session: dict[str, Any], expires_at: int, param: str) -> Any:
    try:
        config = hub.transcription_config(session, param=param)
        probe = hub.transcription_session(Dialect.GA, config)
        where = f"{param}." if param else ""
        nested = "input_audio_transcription" if "input_audio_transcription" in session else "audio.input.transcription"
        probe._check_transcription(config.input.transcription, where + nested)
    except ClientEventError as exc:
        raise _client_event_to_http(exc) from exc
    try:
        key = hub.minter.mint("transcription", token_payload(config), expires_at)
    except KeyTooLarge as exc:
        raise InvalidRequest(f"The session config is too large for an ephemeral key: {exc}.", param=param) from exc
    return config, key


def _mint_conversation(hub: RealtimeHub, session: dict[str, Any], expires_at: int, param: str) -> EphemeralKey:
    # The key carries the config as given; a session opened with it starts from it, so it must parse.
    if hub.conversations is not None:
        try:
            hub.conversations.config(session, param=param)
        except ClientEventError as exc:
            raise _client_event_to_http(exc) from exc
    try:
        return hub.minter.mint("realtime", session, expires_at)
    except KeyTooLarge as exc:
        raise InvalidRequest(f"The session config is too large for an ephemeral key: {exc}.", param=param) from exc


@router.post("/v1/realtime/client_secrets")
async def create_client_secret(request: Request) -> JSONResponse:
    hub = get_state(request).realtime
    body = await json_object(request)
    expires_at = _expiry(hub, _expires_after(body, "expires_after", "expires_after"), "expires_after.seconds")
    session = body.get("session") or {"type": "realtime"}
    if not isinstance(session, dict):
        raise InvalidRequest("'session' must be an object.", param="session")
    kind = session.get("type", "realtime")
    session_id = new_id("sess")
    if kind == "transcription":
        config, key = _mint_transcription(hub, session, expires_at, "session")
        shown = render_ga_transcription_session(config, session_id, 0)
    elif kind == "realtime":
        key = _mint_conversation(hub, session, expires_at, "session")
        shown = {"object": "realtime.session", "id": session_id, "expires_at": 0, **session, "type": "realtime"}
    else:
        raise InvalidRequest(
            f"Invalid 'session.type': expected 'realtime' or 'transcription' (got {kind!r}).",
            param="session.type",
            code="invalid_value",
        )
    return JSONResponse({"value": key.value, "expires_at": key.expires_at, "session": shown})


def _beta_key_expiry(hub: RealtimeHub, body: dict[str, Any], field: str) -> int:
    """The beta session routes' `client_secret.<field>` (the SDK names it differently per route), popped."""
    secret = body.pop("client_secret", None)
    seconds = None
    if secret is not None:
        if not isinstance(secret, dict):
            raise InvalidRequest("'client_secret' must be an object.", param="client_secret")
        seconds = _expires_after(secret, field, f"client_secret.{field}")
    return _expiry(hub, seconds, f"client_secret.{field}.seconds")


@router.post("/v1/realtime/transcription_sessions")
async def create_transcription_session(request: Request) -> JSONResponse:
    hub = get_state(request).realtime
    body = await json_object(request)
    expires_at = _beta_key_expiry(hub, body, "expires_at")
    config, key = _mint_transcription(hub, body, expires_at, "")
    client_secret = {"value": key.value, "expires_at": key.expires_at}
    return JSONResponse(render_beta_transcription_session(config, new_id("sess"), 0, client_secret))


@router.post("/v1/realtime/sessions")
async def create_realtime_session(request: Request) -> JSONResponse:
    hub = get_state(request).realtime
    body = await json_object(request)
    expires_at = _beta_key_expiry(hub, body, "expires_after")
    key = _mint_conversation(hub, body, expires_at, "")
    client_secret = {"value": key.value, "expires_at": key.expires_at}
    shown = {"id": new_id("sess"), "object": "realtime.session", "expires_at": 0, **body}
    return JSONResponse({**shown, "client_secret": client_secret})
