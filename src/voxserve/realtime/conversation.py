"""Conversation sessions (`?model=gpt-realtime`): the user speaks or writes, the assistant answers in
speech (or text), chained as speech-to-text → chat backend → text-to-speech behind OpenAI's
speech-to-speech protocol (contract §6.7).

The input side is the shared session machine's (buffer, turn detection, commits, transcription). This
kind adds the conversation (ordered items the client can create, retrieve, delete and truncate) and
responses. Still sans-IO: a response is handed out as a `ResponseJob` (`take_responses`); the driver
runs it through the spoken-reply pipeline and feeds each of its events back (`reply_event`,
`reply_failed`). A cancelled response (client, barge-in) is listed in `take_cancels`: the driver
stops its generation and synthesis at once; anything it still reports is ignored.

This class is the wiring: the items live in an `ItemList`, the responses in progress in `Responses`
(each a `Response`), the events of a response's output are built by `ResponseOutput`, and
`response.create`'s parameters are read by `response_params`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from voxserve.engines.spoken_reply import ReplyDone, ReplyEvent
from voxserve.errors import VoxError
from voxserve.realtime.config import InputAudioConfig, InputTranscription
from voxserve.realtime.conversation_config import (
    ConversationConfig,
    parse_conversation_update,
    render_beta_conversation_session,
    render_ga_conversation_session,
)
from voxserve.realtime.conversation_events import ConversationEvents
from voxserve.realtime.conversation_items import check_audio_end, decode_item_audio, parse_truncation, truncate_item
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.item_list import ItemList
from voxserve.realtime.protocol import Dialect, user_audio_item
from voxserve.realtime.response_output import ResponseOutput
from voxserve.realtime.response_params import parse_response_request
from voxserve.realtime.response_state import Response, Responses, chat_request, response_usage
from voxserve.realtime.session import RealtimeSession
from voxserve.realtime.session_env import SessionEnv
from voxserve.realtime.transcription import check_denoise
from voxserve.realtime.turn_decoding import ItemTranscript

log = logging.getLogger(__name__)

_TRANSCRIPTION_EVENTS = "conversation.item.input_audio_transcription."


@dataclass
class ConversationEnv:
    """What a conversation needs beyond the input side, injected (fakes in unit tests)."""

    resolve_voice: Callable[[str], Any]  # an OpenAI or local voice name -> the speech engine's voice; VoxError
    default_instructions: str  # the spoken-answer default, when the session sets none
    chat_model: str  # the name the chat backend is asked for
    max_tokens: int = 1024  # the server's cap on one reply (`max_output_tokens: "inf"`)
    context_tokens: int = 4096  # the chat model's context: the history is bounded to fit


@dataclass
class ResponseJob:
    """One reply to generate: the chat request and how to speak it (voice None: text only)."""

    response_id: str
    body: dict[str, Any]
    voice: Any
    speed: float = 1.0


class ConversationSession(RealtimeSession):
    kind: ClassVar[str] = "realtime"
    beta_session_prefix: ClassVar[str] = "session"

    def __init__(
        self,
        env: SessionEnv,
        conversation: ConversationEnv,
        dialect: Dialect = Dialect.GA,
        *,
        config: ConversationConfig | None = None,
        client_secret: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(env, dialect, client_secret)
        self.events: ConversationEvents = ConversationEvents(dialect, env.ids, self.beta_session_prefix)
        self.conversation_env = conversation
        self.config = config or ConversationConfig()
        self._effective_input = self._with_transcription(self.config.input)
        self.conversation_id = env.ids("conv")
        self.item_list = ItemList()
        self._responses = Responses()
        self._pending_transcripts: set[str] = set()
        self._response_jobs: list[ResponseJob] = []
        self._output = ResponseOutput(
            env,
            self.events,
            self.conversation_id,
            emit=self._emit,
            append_item=lambda item: self._insert(item, None, at_end=True),
            has_item=lambda item_id: self.item_list.index(item_id) is not None,
        )
        self._handlers.update(
            {
                "session.update": self._update,
                "conversation.item.create": self._item_create,
                "conversation.item.retrieve": self._item_retrieve,
                "conversation.item.delete": self._item_delete,
                "conversation.item.truncate": self._item_truncate,
                "response.create": self._response_create,
                "response.cancel": self._response_cancel,
            }
        )

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.item_list.items

    def _emit(self, event: dict[str, Any]) -> None:
        self.outbox.append(event)

    # --- the session kind -----------------------------------------------------------------------------

    def _with_transcription(self, config: InputAudioConfig) -> InputAudioConfig:
        # The chat model needs the user's words whether or not the client asked for their transcript.
        if config.transcription is not None:
            return config
        return dataclasses.replace(config, transcription=InputTranscription(self.env.default_stt_model))

    @property
    def input_config(self) -> InputAudioConfig:
        return self._effective_input

    @property
    def logprobs(self) -> bool:
        return self.config.logprobs

    @property
    def instructions(self) -> str:
        return self.config.instructions or self.conversation_env.default_instructions

    def session_object(self) -> dict[str, Any]:
        if self.dialect is Dialect.BETA:
            return render_beta_conversation_session(
                self.config, self.id, self.expires_at, self.instructions, self.client_secret
            )
        return render_ga_conversation_session(self.config, self.id, self.expires_at, self.instructions)

    def take_events(self) -> list[dict[str, Any]]:
        events = super().take_events()
        if self.config.input.transcription is None:
            events = [e for e in events if not e["type"].startswith(_TRANSCRIPTION_EVENTS)]
        return events

    def take_responses(self) -> list[ResponseJob]:
        out, self._response_jobs = self._response_jobs, []
        return out

    def take_cancels(self) -> list[str]:
        return self._responses.take_cancels()

    def receive(self, frame: str | bytes) -> None:
        super().receive(frame)
        self._advance()

    def decoded(self, job: Any, result: Any) -> None:
        super().decoded(job, result)
        self._advance()

    def close(self) -> None:
        self._responses.close()
        super().close()

    def _update(self, event: dict[str, Any]) -> None:
        body = event.get("session")
        if not isinstance(body, dict):
            raise ClientEventError("Missing required parameter: 'session'.", code="missing_required_parameter",
                                   param="session")  # fmt: skip
        if body.get("type") not in (None, "realtime"):
            raise ClientEventError(
                "Passing a transcription session update event to a realtime session is not allowed.",
                code="invalid_value",
                param="session.type",
            )
        updated = parse_conversation_update(self.config, body, self.env.default_stt_model)
        beta = "input_audio_transcription" in body
        self._check_transcription(
            updated.input.transcription,
            "session.input_audio_transcription" if beta else "session.audio.input.transcription",
        )
        self._check_voice(updated.voice, "session.voice" if "voice" in body else "session.audio.output.voice")
        if updated.input.noise_reduction is not None and self.config.input.noise_reduction is None:
            check_denoise(self.env, "session.")
        self.config = updated
        self._effective_input = self._with_transcription(updated.input)
        self._configure_input()
        self.outbox.append(self.events.session_updated(self.session_object()))

    def _check_voice(self, voice: str, param: str) -> None:
        try:
            self.conversation_env.resolve_voice(voice)
        except VoxError as exc:
            raise ClientEventError(exc.message, code=exc.code or "invalid_value", param=param) from exc

    # --- the conversation --------------------------------------------------------------------------------

    def _insert(self, item: dict[str, Any], previous_item_id: str | None, *, at_end: bool) -> str | None:
        """Insert `item` after `previous_item_id` (None: at the end; "root": first); returns the id before it."""
        previous = self.item_list.insert(item, previous_item_id, at_end=at_end)
        self._follow_last(item)
        return previous

    def _follow_last(self, item: dict[str, Any]) -> None:
        # The input side's `last_item_id` (what a next commit follows) is the conversation's last item.
        if self.item_list.is_last(item):
            self.last_item_id = item["id"]

    def _on_committed(self, item_id: str) -> None:
        # The shared machine announced the user's audio item; its transcript comes later.
        self.items.append(user_audio_item(item_id, None))
        self._pending_transcripts.add(item_id)
        turn = self.config.input.turn_detection
        if turn is not None and turn.create_response is not False:
            if self._responses.active is None:
                self._start_response({})
                if self._responses.active is not None:
                    self._responses.active.trigger = item_id
            else:
                self._responses.auto_waiting = True

    def _emit_item_done(self, item: ItemTranscript, transcript: str | None) -> None:
        self._pending_transcripts.discard(item.item_id)
        found = self.item_list.get(item.item_id)
        if found is not None:
            part = found["content"][0]
            part["transcript"] = transcript if transcript is not None else ""
            done = self.events.item_finished(found, item.previous_item_id)
            if done is not None:
                self.outbox.append(done)

    def _speech_started(self, at: int) -> None:
        super()._speech_started(at)
        turn = self.config.input.turn_detection
        active = self._responses.active
        if active is not None and turn is not None and turn.interrupt_response is not False:
            self._cancel(active, "turn_detected", heard_ms=active.heard_ms(self.env.clock))

    def _item_create(self, event: dict[str, Any]) -> None:
        item, before, audio = self.item_list.create(event, new_id=self.env.ids, decode_audio=self._decode_item_audio)
        self._follow_last(item)
        self.outbox.append(self.events.item_added(item, before))
        if audio is not None:
            # A user's audio message: transcribed like a committed turn, announced done with its transcript.
            self._pending_transcripts.add(item["id"])
            pending = ItemTranscript(item["id"], before, audio=audio, end=-1)
            self._items[item["id"]] = pending
            self._finals.append(pending)
            return
        done = self.events.item_finished(item, before)
        if done is not None:
            self.outbox.append(done)

    def _decode_item_audio(self, audio: Any, param: str) -> np.ndarray:
        stream = functools.partial(self.env.input_stream, self.config.input.format, False)
        return decode_item_audio(audio, param, stream, self.env.max_audio_seconds)

    def _item_retrieve(self, event: dict[str, Any]) -> None:
        _, item = self.item_list.find(event)
        self.outbox.append(self.events.item_retrieved(item))

    def _item_delete(self, event: dict[str, Any]) -> None:
        item = self.item_list.remove(event)
        self._pending_transcripts.discard(item["id"])
        if self.last_item_id == item["id"]:
            self.last_item_id = self.item_list.last_id()
        self.outbox.append(self.events.item_deleted(item["id"]))

    def _item_truncate(self, event: dict[str, Any]) -> None:
        _, item = self.item_list.find(event)
        response = self._responses.speaking(item)
        speaking_audio = response is not None and response.audio_out
        content_index, audio_end_ms = parse_truncation(item, event, speaking_audio=speaking_audio)
        pieces = response.pieces if response is not None else item.get("_pieces", [])
        check_audio_end(audio_end_ms, pieces)
        if response is not None:
            # Truncating the answer being spoken: the rest is not generated or spoken any more.
            self._cancel(response, "client_cancelled", heard_ms=float(audio_end_ms), announce_truncation=False)
        else:
            truncate_item(item, pieces, float(audio_end_ms))
        self.outbox.append(self.events.item_truncated(item["id"], content_index, audio_end_ms))

    # --- responses ---------------------------------------------------------------------------------------

    def _response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise ClientEventError("'response' must be an object.", param="response")
        self._start_response(params)

    def _start_response(self, params: dict[str, Any]) -> None:
        request = parse_response_request(
            params,
            self.config,
            self.env.default_stt_model,
            active_id=self._responses.active.id if self._responses.active is not None else None,
            check_voice=self._check_voice,
            find_item=self.item_list.get,
            new_id=self.env.ids,
            decode_audio=self._decode_item_audio,
        )
        response = request.response(self.env.ids("resp"), self.conversation_env.default_instructions)
        self._responses.add(response)
        self.outbox.append(self.events.response_created(self._output.render(response)))

    def _advance(self) -> None:
        """Start the responses whose input is known (a spoken turn is heard once it is transcribed)."""
        if self.closed:
            return
        for response in list(self._responses.by_id.values()):
            if response.started or response.status != "in_progress":
                continue
            if response.input_items is None and any(i["id"] in self._pending_transcripts for i in self.items):
                continue
            if response.trigger is not None and self._heard_nothing(response.trigger):
                # The turn was noise (nothing to transcribe): no answer to it.
                self._end_response(response, "cancelled", {"type": "cancelled", "reason": "turn_detected"})
                continue
            response.started = True
            self._response_jobs.append(self._job(response))

    def _heard_nothing(self, item_id: str) -> bool:
        item = self.item_list.get(item_id)
        return item is not None and not (item["content"][0].get("transcript") or "").strip()

    def _job(self, response: Response) -> ResponseJob:
        env = self.conversation_env
        items = response.input_items if response.input_items is not None else self.items
        body = chat_request(
            response, items, chat_model=env.chat_model, max_tokens=env.max_tokens, context_tokens=env.context_tokens
        )
        voice = env.resolve_voice(response.voice) if response.audio_out else None
        return ResponseJob(response.id, body, voice, response.speed)

    # --- what the driver reports ---------------------------------------------------------------------

    def reply_event(self, response_id: str, event: ReplyEvent) -> None:
        response = self._responses.in_progress(response_id)
        if response is None:
            return  # cancelled: whatever was still under way is dropped
        if isinstance(event, ReplyDone):
            response.usage = response_usage(event)
            if event.finish_reason == "length":
                self._end_response(response, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
            else:
                self._end_response(response, "completed", None)
        else:
            self._output.add(response, event)
        self._advance()

    def reply_failed(self, response_id: str, error: BaseException) -> None:
        response = self._responses.in_progress(response_id)
        if response is None:
            return
        if isinstance(error, VoxError):
            message, code, param = error.message, error.code or "response_failed", error.param
            kind = error.error_type
        else:
            log.error("realtime response failed: %r", error)
            message, code, param, kind = "The response could not be generated.", "response_failed", None, "server_error"
        self.outbox.append(self.events.error(message, type_=kind, code=code, param=param))
        self._end_response(
            response, "failed", {"type": "failed", "error": {"type": kind, "code": code, "message": message}}
        )
        self._advance()

    def _cancel(
        self, response: Response, reason: str, *, heard_ms: float | None = None, announce_truncation: bool = True
    ) -> None:
        message = response.message
        truncated_at = None
        if message is not None and response.audio_out and heard_ms is not None:
            truncated_at = response.cut(heard_ms)
        self._end_response(response, "cancelled", {"type": "cancelled", "reason": reason}, item_status="incomplete")
        if announce_truncation and truncated_at is not None and message is not None:
            self.outbox.append(self.events.item_truncated(message["id"], 0, truncated_at))

    def _response_cancel(self, event: dict[str, Any]) -> None:
        response = self._responses.to_cancel(event.get("response_id"))
        self._cancel(response, "client_cancelled", heard_ms=response.heard_ms(self.env.clock))

    def _end_response(
        self,
        response: Response,
        status: str,
        details: dict[str, Any] | None,
        *,
        item_status: str = "completed",
    ) -> None:
        if status == "cancelled":
            self._responses.cancels.append(response.id)
        self._output.finish(response, status, details, item_status=item_status)
        if self._responses.ended(response):
            self._start_response({})
