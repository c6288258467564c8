"""Conversation sessions (`?model=gpt-realtime`): the user speaks or writes, the assistant answers in
speech (or text), chained as speech-to-text → chat backend → text-to-speech behind OpenAI's
speech-to-speech protocol (contract §6.7).

The input side is the shared session machine's (buffer, turn detection, commits, transcription). This
kind adds the conversation (ordered items the client can create, retrieve, delete and truncate) and
responses. Still sans-IO: a response is handed out as a `ResponseJob` (`take_responses`); the driver
runs it through the spoken-reply pipeline and feeds each of its events back (`reply_event`,
`reply_failed`). A cancelled response (client, barge-in) is listed in `take_cancels`: the driver
stops its generation and synthesis at once; anything it still reports is ignored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from voxserve.audio.g711 import encode_g711
from voxserve.audio.resample import StreamResampler
from voxserve.engines.spoken_reply import AudioPiece, ReplyDone, ReplyEvent, TextDelta, ToolCallDelta
from voxserve.errors import VoxError
from voxserve.realtime.chat_history import bound_history, estimate_tokens, items_to_messages
from voxserve.realtime.config import InputAudioConfig, InputTranscription, render_ga_format
from voxserve.realtime.conversation_config import (
    ConversationConfig,
    parse_conversation_update,
    parse_output_audio,
    render_beta_conversation_session,
    render_ga_conversation_session,
)
from voxserve.realtime.conversation_events import ConversationEvents
from voxserve.realtime.conversation_items import heard_text, parse_client_item, public_item, truncate_item
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.session import RealtimeSession, SessionEnv
from voxserve.realtime.transcription import TranscriptionSession
from voxserve.realtime.turn_decoding import ItemTranscript
from voxserve.transcript import audio_tokens

log = logging.getLogger(__name__)

_TRANSCRIPTION_EVENTS = "conversation.item.input_audio_transcription."
MAX_METADATA = 16
# Room kept in the context for the reply itself and the chat template's own tokens.
CONTEXT_MARGIN = 64


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


@dataclass
class _Response:
    id: str
    in_conversation: bool
    modalities: tuple[str, ...]
    output_format: str
    voice: str
    speed: float
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    instructions: str
    tools: tuple[dict[str, Any], ...]
    tool_choice: str | dict[str, Any]
    input_items: list[dict[str, Any]] | None = None  # out-of-band: its own input
    trigger: str | None = None  # the spoken turn that started it (server VAD)
    status: str = "in_progress"
    started: bool = False
    output: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None
    message_index: int = 0
    message_previous: str | None = None
    text: str = ""
    pieces: list[tuple[float, float, str]] = field(default_factory=list)  # audio sent: (start ms, end ms, text)
    audio_ms: float = 0.0
    first_audio_at: float | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    call_previous: dict[int, str | None] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    resampler: StreamResampler | None = None

    @property
    def audio_out(self) -> bool:
        return "audio" in self.modalities


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
        self.items: list[dict[str, Any]] = []
        self._responses: dict[str, _Response] = {}
        self._active: _Response | None = None  # the in-conversation response, at most one
        self._auto_waiting = False  # a VAD turn ended while a response ran without interruption
        self._pending_transcripts: set[str] = set()
        self._response_jobs: list[ResponseJob] = []
        self._cancels: list[str] = []
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
        out, self._cancels = self._cancels, []
        return out

    def receive(self, frame: str | bytes) -> None:
        super().receive(frame)
        self._advance()

    def decoded(self, job: Any, result: Any) -> None:
        super().decoded(job, result)
        self._advance()

    def close(self) -> None:
        for response in list(self._responses.values()):
            self._cancels.append(response.id)
        self._responses.clear()
        self._active = None
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
            TranscriptionSession._check_denoise(self, "session.")  # type: ignore[arg-type]
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

    def _index(self, item_id: str) -> int | None:
        for index, item in enumerate(self.items):
            if item.get("id") == item_id:
                return index
        return None

    def _insert(self, item: dict[str, Any], previous_item_id: str | None, *, at_end: bool) -> str | None:
        """Insert `item` after `previous_item_id` (None: at the end; "root": first); returns the id before it."""
        if at_end or previous_item_id is None:
            previous = self.items[-1]["id"] if self.items else None
            self.items.append(item)
            self.last_item_id = item["id"]
            return previous
        if previous_item_id == "root":
            self.items.insert(0, item)
            if len(self.items) == 1:
                self.last_item_id = item["id"]
            return None
        index = self._index(previous_item_id)
        if index is None:
            raise ClientEventError(
                f"Item with id '{previous_item_id[:100]}' not found.", code="item_not_found", param="previous_item_id"
            )
        self.items.insert(index + 1, item)
        if index + 1 == len(self.items) - 1:
            self.last_item_id = item["id"]
        return previous_item_id

    def _on_committed(self, item_id: str) -> None:
        # The shared machine announced the user's audio item; its transcript comes later.
        self.items.append(
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "completed",
                "role": "user",
                "content": [{"type": "input_audio", "transcript": None}],
            }
        )
        self._pending_transcripts.add(item_id)
        turn = self.config.input.turn_detection
        if turn is not None and turn.create_response is not False:
            if self._active is None:
                self._start_response({}, auto=True)
                if self._active is not None:
                    self._active.trigger = item_id
            else:
                self._auto_waiting = True

    def _emit_item_done(self, item: ItemTranscript, transcript: str | None) -> None:
        self._pending_transcripts.discard(item.item_id)
        index = self._index(item.item_id)
        if index is not None:
            part = self.items[index]["content"][0]
            part["transcript"] = transcript if transcript is not None else ""
            done = self.events.item_finished(self.items[index], item.previous_item_id)
            if done is not None:
                self.outbox.append(done)

    def _speech_started(self, at: int) -> None:
        super()._speech_started(at)
        turn = self.config.input.turn_detection
        active = self._active
        if active is not None and turn is not None and turn.interrupt_response is not False:
            self._cancel(active, "turn_detected", heard_ms=self._heard_ms(active))

    def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise ClientEventError("Missing required parameter: 'item'.", code="missing_required_parameter",
                                   param="item")  # fmt: skip
        previous = event.get("previous_item_id")
        if previous is not None and not isinstance(previous, str):
            raise ClientEventError("'previous_item_id' must be a string.", param="previous_item_id")
        item, audio = parse_client_item(raw, "item", new_id=self.env.ids, decode_audio=self._decode_item_audio)
        if item["id"] in {i["id"] for i in self.items}:
            raise ClientEventError(
                f"Item with id '{item['id']}' already exists.", code="item_already_exists", param="item.id"
            )
        before = self._insert(item, previous, at_end=previous is None)
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
        if not isinstance(audio, str) or not audio:
            raise ClientEventError("An input_audio part needs base64 'audio'.", code="missing_required_parameter",
                                   param=param)  # fmt: skip
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientEventError(f"Invalid 'audio': not valid base64 ({exc}).", param=param) from exc
        stream = self.env.input_stream(self.config.input.format, False)
        try:
            samples = stream.push(raw)
        finally:
            stream.close()
        if samples.size < 1600:
            raise ClientEventError("The audio is shorter than 100 ms.", param=param)
        if samples.size > self.env.max_audio_seconds * 16000:
            raise ClientEventError(f"The audio is longer than {self.env.max_audio_seconds:g} s.", param=param)
        return samples

    def _find(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise ClientEventError("Missing required parameter: 'item_id'.", code="missing_required_parameter",
                                   param="item_id")  # fmt: skip
        index = self._index(item_id)
        if index is None:
            raise ClientEventError(f"Item with id '{item_id[:100]}' not found.", code="item_not_found",
                                   param="item_id")  # fmt: skip
        return index, self.items[index]

    def _item_retrieve(self, event: dict[str, Any]) -> None:
        _, item = self._find(event)
        self.outbox.append(self.events.item_retrieved(item))

    def _item_delete(self, event: dict[str, Any]) -> None:
        index, item = self._find(event)
        del self.items[index]
        self._pending_transcripts.discard(item["id"])
        if self.last_item_id == item["id"]:
            self.last_item_id = self.items[-1]["id"] if self.items else None
        self.outbox.append(self.events.item_deleted(item["id"]))

    def _item_truncate(self, event: dict[str, Any]) -> None:
        _, item = self._find(event)
        content_index = event.get("content_index", 0)
        audio_end_ms = event.get("audio_end_ms")
        if item.get("role") != "assistant" or not any(p["type"] == "output_audio" for p in item["content"]):
            raise ClientEventError("Only assistant messages with audio can be truncated.", param="item_id")
        if not isinstance(content_index, int) or not 0 <= content_index < len(item["content"]):
            raise ClientEventError("Invalid 'content_index'.", param="content_index")
        if isinstance(audio_end_ms, bool) or not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise ClientEventError("'audio_end_ms' must be a non-negative integer.", param="audio_end_ms")
        response = next((r for r in self._responses.values() if r.message is item), None)
        pieces = response.pieces if response is not None else item.get("_pieces", [])
        total = pieces[-1][1] if pieces else 0.0
        if audio_end_ms > total + 1:
            raise ClientEventError(
                f"audio_end_ms ({audio_end_ms}) is longer than the item's audio ({int(total)} ms).",
                param="audio_end_ms",
            )
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
        self._start_response(params, auto=False)

    def _start_response(self, params: dict[str, Any], *, auto: bool) -> None:
        config = self.config
        conversation = params.get("conversation", "auto")
        if conversation not in ("auto", "none"):
            raise ClientEventError("'response.conversation' must be 'auto' or 'none'.", param="response.conversation")
        in_conversation = conversation == "auto"
        if in_conversation and self._active is not None:
            raise ClientEventError(
                f"Conversation already has an active response in progress: {self._active.id}. Wait until the "
                "response is finished before creating a new one.",
                code="conversation_already_has_active_response",
                param=None,
            )
        known = {
            "instructions", "output_modalities", "modalities", "conversation", "input", "tools", "tool_choice",
            "metadata", "audio", "voice", "output_audio_format", "max_output_tokens", "max_response_output_tokens",
            "temperature", "prompt", "tracing",
        }  # fmt: skip
        for key in params:
            if key not in known:
                raise ClientEventError(f"Unknown parameter: 'response.{key}'.", code="unknown_parameter",
                                       param=f"response.{key}")  # fmt: skip
        update: dict[str, Any] = {}
        for key in ("instructions", "tools", "tool_choice", "output_modalities", "max_output_tokens"):
            if key in params:
                update[key] = params[key]
        for beta_key in ("modalities", "voice", "output_audio_format", "max_response_output_tokens", "temperature"):
            if beta_key in params:
                update[beta_key] = params[beta_key]
        audio = params.get("audio")
        if audio is not None:
            if not isinstance(audio, dict) or set(audio) - {"output"}:
                raise ClientEventError("'response.audio' holds only 'output'.", param="response.audio")
            if audio.get("output") is not None:
                parse_output_audio(audio["output"], "response.audio.output")
                update["audio"] = {"output": audio["output"]}
        instructions = config.instructions
        if update:
            per = parse_conversation_update(
                dataclasses.replace(config, instructions=None), update, self.env.default_stt_model, param="response"
            )
            if "instructions" in update:
                instructions = per.instructions
            config = dataclasses.replace(per, instructions=instructions)
            self._check_voice(config.voice, "response.audio.output.voice")
        metadata = params.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or len(metadata) > MAX_METADATA
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items()
            )
        ):
            raise ClientEventError(
                "'response.metadata' must map at most 16 string keys (64 characters) to strings (512 characters).",
                param="response.metadata",
            )
        input_items = None
        if "input" in params:
            input_items = self._response_input(params["input"])
        response = _Response(
            id=self.env.ids("resp"),
            in_conversation=in_conversation,
            modalities=config.output_modalities,
            output_format=config.output_format,
            voice=config.voice,
            speed=config.speed,
            max_output_tokens=config.max_output_tokens,
            metadata=metadata,
            instructions=config.instructions or self.conversation_env.default_instructions,
            tools=config.tools,
            tool_choice=config.tool_choice,
            input_items=input_items,
        )
        self._responses[response.id] = response
        if in_conversation:
            self._active = response
        self.outbox.append(self.events.response_created(self._response_object(response)))

    def _response_input(self, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            raise ClientEventError("'response.input' must be an array of items.", param="response.input")
        items = []
        for index, raw in enumerate(value):
            where = f"response.input[{index}]"
            if not isinstance(raw, dict):
                raise ClientEventError("Each input item must be an object.", param=where)
            if raw.get("type") == "item_reference":
                found = self._index(str(raw.get("id")))
                if found is None:
                    raise ClientEventError(f"Item with id '{str(raw.get('id'))[:100]}' not found.",
                                           code="item_not_found", param=f"{where}.id")  # fmt: skip
                items.append(self.items[found])
                continue
            item, audio = parse_client_item(raw, where, new_id=self.env.ids, decode_audio=self._decode_item_audio)
            if audio is not None:
                raise ClientEventError(
                    "Out-of-band input audio needs its 'transcript' here; send audio through the input buffer.",
                    param=f"{where}.content",
                )
            items.append(item)
        return items

    def _advance(self) -> None:
        """Start the responses whose input is known (a spoken turn is heard once it is transcribed)."""
        if self.closed:
            return
        for response in list(self._responses.values()):
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
        index = self._index(item_id)
        return index is not None and not (self.items[index]["content"][0].get("transcript") or "").strip()

    def _job(self, response: _Response) -> ResponseJob:
        env = self.conversation_env
        limit = env.max_tokens
        if isinstance(response.max_output_tokens, int):
            limit = min(limit, response.max_output_tokens)
        system = {"role": "system", "content": response.instructions}
        items = response.input_items if response.input_items is not None else self.items
        budget = env.context_tokens - limit - estimate_tokens(system) - CONTEXT_MARGIN
        history = bound_history(items_to_messages(items), max(budget, 1))
        body: dict[str, Any] = {
            "model": env.chat_model,
            "messages": [system, *history] if response.instructions else history,
            "max_tokens": limit,
            "stream_options": {"include_usage": True},
        }
        if response.tools and response.tool_choice != "none":
            body["tools"] = [
                {"type": "function", "function": {k: v for k, v in tool.items() if k != "type"}}
                for tool in response.tools
            ]
            choice = response.tool_choice
            body["tool_choice"] = (
                choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice["name"]}}
            )
        voice = env.resolve_voice(response.voice) if response.audio_out else None
        return ResponseJob(response.id, body, voice, response.speed)

    def _response_object(self, response: _Response) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object": "realtime.response",
            "id": response.id,
            "status": response.status,
            "status_details": None,
            "output": [self.events.item(item) for item in response.output],
            "conversation_id": self.conversation_id if response.in_conversation else None,
            "max_output_tokens": response.max_output_tokens,
            "usage": response.usage,
            "metadata": response.metadata,
        }
        if self.dialect is Dialect.BETA:
            out["modalities"] = ["text", "audio"] if response.audio_out else ["text"]
            out["voice"] = response.voice
            out["output_audio_format"] = response.output_format
        else:
            out["output_modalities"] = list(response.modalities)
            out["audio"] = {"output": {"format": render_ga_format(response.output_format), "voice": response.voice}}
        return out

    # --- what the driver reports ---------------------------------------------------------------------

    def reply_event(self, response_id: str, event: ReplyEvent) -> None:
        response = self._responses.get(response_id)
        if response is None or response.status != "in_progress":
            return  # cancelled: whatever was still under way is dropped
        if isinstance(event, TextDelta):
            self._open_message(response)
            assert response.message is not None
            response.text += event.text
            if response.audio_out:
                delta = self.events.transcript_delta(response.id, response.message["id"], response.message_index,
                                                     event.text)  # fmt: skip
            else:
                delta = self.events.text_delta(response.id, response.message["id"], response.message_index, event.text)
            self.outbox.append(delta)
        elif isinstance(event, AudioPiece):
            self._open_message(response)
            assert response.message is not None
            data = self._encode(response, event.pcm)
            if response.first_audio_at is None:
                response.first_audio_at = self.env.clock()
            response.pieces.append((event.start_ms, event.end_ms, event.text))
            response.audio_ms = event.end_ms
            if data:
                self.outbox.append(
                    self.events.audio_delta(
                        response.id, response.message["id"], response.message_index, base64.b64encode(data).decode()
                    )
                )
        elif isinstance(event, ToolCallDelta):
            self._tool_calls(response, event.tool_calls)
        elif isinstance(event, ReplyDone):
            response.usage = self._response_usage(event)
            if event.finish_reason == "length":
                self._end_response(response, "incomplete", {"type": "incomplete", "reason": "max_output_tokens"})
            else:
                self._end_response(response, "completed", None)
        self._advance()

    def reply_failed(self, response_id: str, error: BaseException) -> None:
        response = self._responses.get(response_id)
        if response is None or response.status != "in_progress":
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

    def _open_message(self, response: _Response) -> None:
        if response.message is not None:
            return
        item = {
            "id": self.env.ids("item"),
            "object": "realtime.item",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        response.message = item
        response.message_index = len(response.output)
        response.output.append(item)
        self.outbox.append(self.events.output_item_added(response.id, response.message_index, item))
        if response.in_conversation:
            response.message_previous = self._insert(item, None, at_end=True)
            self.outbox.append(self.events.item_added(item, response.message_previous))
        part = {"type": "audio", "transcript": ""} if response.audio_out else {"type": "text", "text": ""}
        self.outbox.append(self.events.content_part_added(response.id, item["id"], response.message_index, part))

    def _encode(self, response: _Response, pcm: bytes) -> bytes:
        if response.output_format == "pcm16":
            return pcm
        if response.resampler is None:
            response.resampler = StreamResampler(24000, 8000)
        samples = response.resampler.push(np.frombuffer(pcm, dtype="<i2").astype(np.int16))
        pcm8k = np.clip(samples * 32768.0, -32768, 32767).astype(np.int16)
        return encode_g711(pcm8k, "ulaw" if response.output_format == "g711_ulaw" else "alaw")

    def _tool_calls(self, response: _Response, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            index = int(delta.get("index") or 0)
            function = delta.get("function") or {}
            call = response.calls.get(index)
            if call is None:
                call = {
                    "id": self.env.ids("item"),
                    "object": "realtime.item",
                    "type": "function_call",
                    "status": "in_progress",
                    "call_id": delta.get("id") or self.env.ids("call"),
                    "name": function.get("name") or "",
                    "arguments": "",
                }
                response.calls[index] = call
                call["_index"] = len(response.output)
                response.output.append(call)
                shown = public_item(call)
                self.outbox.append(self.events.output_item_added(response.id, call["_index"], shown))
                if response.in_conversation:
                    response.call_previous[index] = self._insert(call, None, at_end=True)
                    self.outbox.append(self.events.item_added(shown, response.call_previous[index]))
            elif function.get("name") and not call["name"]:
                call["name"] = function["name"]
            piece = function.get("arguments")
            if piece:
                call["arguments"] += piece
                self.outbox.append(
                    self.events.arguments_delta(response.id, call["id"], call["_index"], call["call_id"], piece)
                )

    def _response_usage(self, done: ReplyDone) -> dict[str, Any]:
        usage = done.usage or {}
        text_in = int(usage.get("prompt_tokens") or 0)
        text_out = int(usage.get("completion_tokens") or 0)
        audio_out = audio_tokens(done.audio_ms / 1000) if done.audio_ms else 0
        return {
            "total_tokens": text_in + text_out + audio_out,
            "input_tokens": text_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {
                "text_tokens": text_in,
                "audio_tokens": 0,
                "image_tokens": 0,
                "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
            },
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }

    def _heard_ms(self, response: _Response) -> float:
        """How much of the answer's audio a client playing it in real time has heard by now."""
        if response.first_audio_at is None:
            return 0.0
        return max(0.0, min(response.audio_ms, (self.env.clock() - response.first_audio_at) * 1000))

    def _cancel(
        self, response: _Response, reason: str, *, heard_ms: float | None = None, announce_truncation: bool = True
    ) -> None:
        message = response.message
        truncated_at = None
        if message is not None and response.audio_out and heard_ms is not None:
            # What was not heard was not said: the item keeps the words of the audio played.
            cut = min(heard_ms, response.audio_ms)
            response.text = heard_text(response.pieces, cut)
            if cut < response.audio_ms or response.audio_ms == 0:
                truncated_at = int(cut)
            response.pieces = [(s, min(e, cut), t) for s, e, t in response.pieces if s < cut]
            response.audio_ms = cut
        self._end_response(response, "cancelled", {"type": "cancelled", "reason": reason}, item_status="incomplete")
        if announce_truncation and truncated_at is not None and message is not None:
            self.outbox.append(self.events.item_truncated(message["id"], 0, truncated_at))

    def _response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if wanted is not None:
            response = self._responses.get(wanted) if isinstance(wanted, str) else None
            if response is None:
                raise ClientEventError(
                    f"Cannot cancel response '{str(wanted)[:100]}': it is not in progress.",
                    code="response_cancel_not_active",
                    param="response_id",
                )
        else:
            response = self._active
            if response is None:
                raise ClientEventError(
                    "Cancellation failed: no active response found.", code="response_cancel_not_active"
                )
        self._cancel(response, "client_cancelled", heard_ms=self._heard_ms(response))

    def _end_response(
        self,
        response: _Response,
        status: str,
        details: dict[str, Any] | None,
        *,
        item_status: str = "completed",
    ) -> None:
        if status == "cancelled":
            self._cancels.append(response.id)
        response.status = status
        message = response.message
        if message is not None:
            index = response.message_index
            if response.audio_out:
                part = {"type": "output_audio", "transcript": response.text}
                self.outbox.append(self.events.audio_done(response.id, message["id"], index))
                self.outbox.append(self.events.transcript_done(response.id, message["id"], index, response.text))
                shown_part = {"type": "audio", "transcript": response.text}
            else:
                part = {"type": "output_text", "text": response.text}
                self.outbox.append(self.events.text_done(response.id, message["id"], index, response.text))
                shown_part = {"type": "text", "text": response.text}
            self.outbox.append(self.events.content_part_done(response.id, message["id"], index, shown_part))
            message["content"] = [part]
            message["status"] = item_status
            if response.audio_out:
                message["_pieces"] = list(response.pieces)
            shown = public_item(message)
            self.outbox.append(self.events.output_item_done(response.id, index, shown))
            if response.in_conversation and self._index(message["id"]) is not None:
                done = self.events.item_finished(shown, response.message_previous)
                if done is not None:
                    self.outbox.append(done)
        for index, call in sorted(response.calls.items()):
            call["status"] = "completed" if status == "completed" else "incomplete"
            shown = public_item(call)
            if status == "completed":
                self.outbox.append(
                    self.events.arguments_done(
                        response.id, call["id"], call["_index"], call["call_id"], call["name"], call["arguments"]
                    )
                )
            self.outbox.append(self.events.output_item_done(response.id, call["_index"], shown))
            if response.in_conversation and self._index(call["id"]) is not None:
                done = self.events.item_finished(shown, response.call_previous.get(index))
                if done is not None:
                    self.outbox.append(done)
        out = self._response_object(response)
        out["output"] = [self.events.item(public_item(item)) for item in response.output]
        out["status_details"] = details
        self.outbox.append(self.events.response_done(out))
        self._responses.pop(response.id, None)
        if self._active is response:
            self._active = None
            if self._auto_waiting:
                self._auto_waiting = False
                self._start_response({}, auto=True)
