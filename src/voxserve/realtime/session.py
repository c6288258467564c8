"""The realtime session machine shared by every session kind: the input audio buffer, turn detection,
commits, conversation items and their input transcription, errors, and GA-versus-beta naming.

It is sans-IO: `receive(frame)` takes one client frame, the session appends server events to its
outbox and, when it wants audio transcribed, a `DecodeJob` to its job list. Whoever drives it (the
WebSocket route, or a unit test) sends the events, runs the jobs and hands each result back through
`decoded(job, result)`. At most one job per session is out at a time, so sessions share the
speech-to-text engine fairly. Calls must not overlap (the route serialises them).

Kinds extend it: `TranscriptionSession` (here: transcription-only sessions); a conversation session
adds its responses on top of the same input side (`_on_committed` is the hook).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from voxserve.audio.input_stream import InputAudioStream, bytes_per_second
from voxserve.engines.live_transcription import LiveWord, delta_text, repeats
from voxserve.engines.registry import ModelSpec
from voxserve.engines.streaming_vad import FRAME, SileroFrames, TurnDetector
from voxserve.engines.whisper import TranscribeOptions
from voxserve.errors import VoxError
from voxserve.formats.transcript_json import token_usage
from voxserve.languages import LANGUAGES
from voxserve.realtime.audio_buffer import AudioBuffer
from voxserve.realtime.client_frames import parse_frame
from voxserve.realtime.config import InputAudioConfig, InputTranscription
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect, EventFactory, user_audio_item
from voxserve.realtime.session_env import SessionEnv
from voxserve.realtime.turn_decoding import (
    DecodeContext,
    DecodeJob,
    ItemTranscript,
    PreviousTurn,
    Turn,
    after_context,
    decode_options,
    live_transcript,
    partial_due,
    turn_run,
)
from voxserve.transcript import Transcript

log = logging.getLogger(__name__)

RATE = 16000
MAX_APPEND_BASE64 = 15 * 1024 * 1024  # per `input_audio_buffer.append` event (contract §6.3)
MIN_COMMIT_SAMPLES = RATE // 10  # 100 ms
# The session's last transcripts, up to this many characters, condition each turn's decode (Whisper's
# prompt, after the client's own): a turn cut at a pause then reads as the continuation it is.
CONTEXT_CHARS = 300


class RealtimeSession:
    kind: ClassVar[str] = "realtime"
    beta_session_prefix: ClassVar[str] = "session"

    def __init__(
        self, env: SessionEnv, dialect: Dialect = Dialect.GA, client_secret: dict[str, Any] | None = None
    ) -> None:
        self.env = env
        self.dialect = dialect
        self.events = EventFactory(dialect, env.ids, self.beta_session_prefix)
        self.id = env.ids("sess")
        self.created_at = int(env.clock())
        self.expires_at = self.created_at + env.session_seconds
        self.client_secret = client_secret or {"value": "", "expires_at": 0}
        self.outbox: list[dict[str, Any]] = []
        self.jobs: list[DecodeJob] = []
        self.in_flight: DecodeJob | None = None
        self.closed = False
        self._buffer = AudioBuffer()
        self._input: InputAudioStream | None = None
        self._input_key: tuple[str, bool] | None = None
        self._vad: SileroFrames | None = None
        self._turns: TurnDetector | None = None
        self._vad_origin = 0
        self._turn: Turn | None = None
        self._items: dict[str, ItemTranscript] = {}
        self._finals: deque[ItemTranscript] = deque()
        self.last_item_id: str | None = None
        # The language the last final decode heard: live decodes use it rather than detect it again
        # on a second or two of speech (the final decodes still detect, as the REST endpoint does).
        self._heard_language: str | None = None
        self._context = ""  # the session's transcripts so far, the last CONTEXT_CHARS of them
        self._previous: list[PreviousTurn] = []  # the run of turns a next turn may be decoded after
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "input_audio_buffer.append": self._append,
            "input_audio_buffer.commit": self._commit_event,
            "input_audio_buffer.clear": self._clear,
        }

    # --- what kinds provide ---------------------------------------------------------------------

    @property
    def input_config(self) -> InputAudioConfig:
        raise NotImplementedError

    @property
    def logprobs(self) -> bool:
        return False

    def session_object(self) -> dict[str, Any]:
        raise NotImplementedError

    def _on_committed(self, item_id: str) -> None:
        """A user audio item was added (a conversation starts its response here)."""

    # --- driving the session ----------------------------------------------------------------------

    def start(self) -> None:
        self._configure_input()
        self.outbox.append(self.events.session_created(self.session_object()))

    def take_events(self) -> list[dict[str, Any]]:
        out, self.outbox = self.outbox, []
        return out

    def take_jobs(self) -> list[DecodeJob]:
        out, self.jobs = self.jobs, []
        return out

    def receive(self, frame: str | bytes) -> None:
        """One client frame: handled, or answered by an `error` event; the session stays open."""
        client_event_id = None
        try:
            event = parse_frame(frame)
            if isinstance(event.get("event_id"), str):
                client_event_id = event["event_id"]
            type_ = event.get("type")
            if not isinstance(type_, str) or not type_:
                raise ClientEventError("The 'type' field is missing.", code="invalid_event", param="type")
            handler = self._handlers.get(type_)
            if handler is None:
                raise self._unsupported(type_)
            handler(event)
        except ClientEventError as exc:
            self.outbox.append(
                self.events.error(
                    exc.message, type_=exc.type, code=exc.code, param=exc.param, client_event_id=client_event_id
                )
            )
        self._schedule()

    def _unsupported(self, type_: str) -> ClientEventError:
        return ClientEventError(
            f"Invalid value: '{type_[:100]}'. Supported event types here: {', '.join(sorted(self._handlers))}.",
            code="invalid_event",
            param="type",
        )

    def decoded(self, job: DecodeJob, result: Transcript | BaseException | None) -> None:
        """The outcome of a job from `take_jobs`: a transcript, an error, or None (a live decode skipped)."""
        if self.in_flight is job:
            self.in_flight = None
        item = self._items.get(job.item_id)
        if item is not None and not item.done:
            if isinstance(result, BaseException):
                if job.kind == "final":
                    self._fail(item, result)
                else:
                    log.warning("live decode failed: %s", result)
            elif result is not None and job.context_words:
                ended = bool(self._previous) and self._previous[-1].ends_sentence
                result = after_context(result, job.context_words, ended)
                if result is not None:
                    self._decoded(item, job, result)
                elif job.kind != "partial":  # (a live decode that lost them is just not counted)
                    log.info("a decode with the previous turn's audio in front lost that turn: decoding alone")
                    item.alone = True  # the final decode is asked for again, of the turn alone
            elif result is not None:
                self._decoded(item, job, result)
        self._schedule()

    def _decoded(self, item: ItemTranscript, job: DecodeJob, result: Transcript) -> None:
        prompted = self.env.turn_context and bool(self._context) and not item.unprompted
        if job.kind != "partial" and prompted and repeats(result):
            # Whisper conditioned on the session's earlier text sometimes reads a short turn twice over
            # ("This I read with great attention. This I read with great attention."): decode it without.
            item.unprompted = True
            return
        if job.kind == "final":
            self._finish(item, result)
            return
        sure = 0.0 if job.options.language else self.env.live_language_probability
        self._send_delta(item, item.live.update(result, sure))
        if job.kind == "candidate":
            item.candidate = (job.end, result)

    def close(self) -> None:
        self.closed = True
        if self._input is not None:
            self._input.close()
        self._buffer.clear()
        self._items.clear()
        self._finals.clear()
        self._previous = []
        self.jobs.clear()

    # --- input configuration ----------------------------------------------------------------------

    def _configure_input(self) -> None:
        """(Re)build the converter and VAD for the current input config."""
        config = self.input_config
        key = (config.format, config.noise_reduction is not None)
        if key != self._input_key:
            if self._input is not None:
                self._input.close()
            self._input = self.env.input_stream(*key)
            self._input_key = key
        turn = config.turn_detection
        wanted = None if turn is None else (turn.threshold, turn.effective_silence_ms)
        current = None if self._turns is None else (self._turns.threshold, self._turns.silence_samples)
        if wanted is None:
            self._vad = self._turns = None
            self._turn = None
            return
        if current is None or current != (wanted[0], max(FRAME, wanted[1] * RATE // 1000)):
            self._vad = self.env.vad_frames()
            self._turns = TurnDetector(turn.threshold, turn.effective_silence_ms, self.env.end_padding_ms)
            self._vad_origin = self._buffer.end
            self._turn = None

    def _check_transcription(self, value: InputTranscription | None, param: str) -> None:
        if value is None:
            return
        try:
            self.env.resolve_stt(value.model)
        except VoxError as exc:
            raise ClientEventError(exc.message, code=exc.code, param=f"{param}.model") from exc
        if value.language and value.language not in LANGUAGES:
            raise ClientEventError(
                f"Unsupported language '{value.language}': use an ISO-639-1 code such as 'en'.",
                code="unsupported_value",
                param=f"{param}.language",
            )

    # --- input audio buffer -------------------------------------------------------------------------

    @property
    def _max_samples(self) -> int:
        return int(self.env.max_audio_seconds * RATE)

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ClientEventError(
                "Missing required parameter: 'audio' (base64-encoded audio bytes).",
                code="missing_required_parameter" if audio is None else "invalid_type",
                param="audio",
            )
        if len(audio) > MAX_APPEND_BASE64:
            raise ClientEventError(
                f"The audio of one append may be at most {MAX_APPEND_BASE64} base64 characters (15 MiB).",
                param="audio",
            )
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientEventError(f"Invalid 'audio': not valid base64 ({exc}).", param="audio") from exc
        assert self._input is not None
        incoming = len(raw) * RATE // bytes_per_second(self._input.format)
        if self._buffered_turn_samples() + incoming > self._max_samples:
            raise ClientEventError(
                f"The input audio buffer is full: it holds at most {self.env.max_audio_seconds:g} s of audio. "
                "Commit or clear it (this append was not added).",
                code="input_audio_buffer_full",
                param="audio",
            )
        samples = self._input.push(raw)
        if samples.size:
            self._feed(samples)

    def _buffered_turn_samples(self) -> int:
        if self._turns is None:
            return len(self._buffer)
        return self._buffer.end - self._turn.audio_from if self._turn is not None else 0

    def _feed(self, samples: np.ndarray) -> None:
        self._buffer.append(samples)
        if self._turns is None or self._vad is None:
            return
        for turn_event in self._turns.push(self._vad.push(samples)):
            at = self._vad_origin + turn_event.sample
            if turn_event.kind == "start":
                self._speech_started(at)
            elif self._turn is None:
                continue
            elif turn_event.kind == "pause":
                self._turn.paused_until = at + self._padding
            elif turn_event.kind == "resume":
                self._turn.paused_until = None
            elif turn_event.kind == "stop":
                self._speech_stopped(at)
        if self._turn is None:
            # Idle: keep only what a next turn's prefix padding can reach back to.
            assert self.input_config.turn_detection is not None
            keep = self.input_config.turn_detection.prefix_padding_ms * RATE // 1000 + FRAME
            self._buffer.drop_before(self._buffer.end - keep)

    @property
    def _quick_until(self) -> int:
        return self.env.partial_quick_until_ms * RATE // 1000

    @property
    def _padding(self) -> int:
        return self.env.end_padding_ms * RATE // 1000

    def _speech_started(self, at: int) -> None:
        turn = self.input_config.turn_detection
        assert turn is not None
        item_id = self.env.ids("item")
        prefix = turn.prefix_padding_ms * RATE // 1000
        self._turn = Turn(item_id, at, max(self._buffer.origin, at - prefix), last_partial=at)
        self._items[item_id] = self._new_item(item_id)
        self._items[item_id].start = self._turn.audio_from
        self.outbox.append(self.events.speech_started(at * 1000 // RATE, item_id))

    def _speech_stopped(self, at: int) -> None:
        turn = self._turn
        assert turn is not None
        self._turn = None
        self.outbox.append(self.events.speech_stopped(at * 1000 // RATE, turn.item_id))
        end = at + min(self._padding, self.input_config.turn_detection.effective_silence_ms * RATE // 1000)  # type: ignore[union-attr]
        audio = self._buffer.slice(turn.audio_from, end)
        self._buffer.drop_before(end)
        self._add_item(turn.item_id, audio, end)

    def _commit_event(self, event: dict[str, Any]) -> None:
        if self._input is not None:
            tail = self._input.flush()  # the denoiser's lag: the end of the speech, not lost at commit
            if tail.size:
                self._feed(tail)
        if self._turn is not None:
            item_id, start = self._turn.item_id, self._turn.audio_from
        else:
            item_id, start = self.env.ids("item"), self._buffer.origin
        audio = self._buffer.slice(start, self._buffer.end)
        if audio.size < MIN_COMMIT_SAMPLES:
            raise ClientEventError(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {audio.size * 1000 / RATE:.2f}ms of audio.",
                code="input_audio_buffer_commit_empty",
                param=None,
            )
        end = self._buffer.end
        self._buffer.clear()
        self._end_turn()
        self._items.setdefault(item_id, self._new_item(item_id))
        self._add_item(item_id, audio, end)

    def _clear(self, event: dict[str, Any]) -> None:
        if self._turn is not None:
            self._items.pop(self._turn.item_id, None)
        self._buffer.clear()
        self._end_turn()
        self.outbox.append(self.events.cleared())

    def _end_turn(self) -> None:
        self._turn = None
        if self._turns is not None:
            self._turns.force_end()

    # --- items and their transcription --------------------------------------------------------------

    def _new_item(self, item_id: str) -> ItemTranscript:
        return ItemTranscript(item_id, live=live_transcript(self.env))

    def _add_item(self, item_id: str, audio: np.ndarray, end: int) -> None:
        previous = self.last_item_id
        self.last_item_id = item_id
        self.outbox.append(self.events.committed(item_id, previous))
        self.outbox.append(self.events.item_announced(user_audio_item(item_id, None), previous))
        item = self._items.setdefault(item_id, self._new_item(item_id))
        item.previous_item_id = previous
        item.audio = audio
        item.end = end
        if self.input_config.transcription is None:
            item.done = True
            self._items.pop(item_id, None)
            self._emit_item_done(item, None)
        else:
            self._finals.append(item)
        self._on_committed(item_id)

    def _emit_item_done(self, item: ItemTranscript, transcript: str | None) -> None:
        done = self.events.item_done(user_audio_item(item.item_id, transcript), item.previous_item_id)
        if done is not None:
            self.outbox.append(done)

    def _decode_options(
        self, final: bool, samples: int = 0, context: str | None = None
    ) -> tuple[ModelSpec, TranscribeOptions] | None:
        known = DecodeContext(self._heard_language, self._context if context is None else context, self.logprobs)
        return decode_options(self.env, self.input_config.transcription, known, final, samples)

    def _turn_job(self, item: ItemTranscript, kind: str, audio: np.ndarray, end: int) -> DecodeJob | None:
        """A decode of `item`'s `audio`, with the audio of the turns just before it in front when they
        came a moment ago (see `PreviousTurn`; live decodes only with `live_audio_context`)."""
        run = self._previous
        words = tuple(w for turn in run for w in turn.words)
        final = kind != "partial"
        if (
            not words
            or item.start is None
            or item.alone
            or item.unprompted
            or not (final or self.env.live_audio_context)
            or not 0 <= item.start - run[-1].end <= self.env.turn_audio_gap_ms * RATE // 1000
        ):
            chosen = self._decode_options(final=final, samples=audio.size, context="" if item.unprompted else None)
            return None if chosen is None else DecodeJob(item.item_id, kind, audio, end, *chosen)
        chosen = self._decode_options(final=final, samples=audio.size, context=run[0].prompt)
        if chosen is None:
            return None
        joined = np.concatenate([*(turn.audio for turn in run), audio])
        return DecodeJob(item.item_id, kind, joined, end, *chosen, context_words=words)

    def _schedule(self) -> None:
        """Hand out the next decode this session wants, if none is out."""
        if self.closed or self.in_flight is not None:
            return
        while self._finals:
            item = self._finals[0]
            if item.done:
                self._finals.popleft()
                continue
            if item.candidate is not None and item.candidate[0] == item.end:
                self._finish(item, item.candidate[1])
                continue
            assert item.audio is not None
            job = self._turn_job(item, "final", item.audio, item.end)
            if job is None:
                self._fail(item, RuntimeError("The transcription model is not available."))
                continue
            self._issue(job)
            return
        turn = self._turn
        if turn is None or self.input_config.transcription is None:
            return
        item = self._items.get(turn.item_id)
        if item is None:
            return
        if turn.paused_until is not None:
            if turn.paused_until <= self._buffer.end and (
                item.candidate is None or item.candidate[0] != turn.paused_until
            ):
                audio = self._buffer.slice(turn.audio_from, turn.paused_until)
                job = self._turn_job(item, "candidate", audio, turn.paused_until)
                if job is not None:
                    self._issue(job)
            return
        if not self.env.live_deltas:
            return
        now = self._buffer.end
        if self._turns is not None and self._turns.in_silence and now - turn.start >= self._quick_until:
            # Speech may have stopped: a live decode of a long turn started now (up to ~0.5 s) would
            # hold the gate when the pause's candidate decode (the final text) wants it, and would read
            # nothing new. A young turn's are cheap, and its first words wait for them.
            return
        if partial_due(self.env, turn, now):
            job = self._turn_job(item, "partial", self._buffer.slice(turn.audio_from, now), now)
            if job is not None:
                turn.last_partial = now
                self._issue(job)

    def _issue(self, job: DecodeJob) -> None:
        self.in_flight = job
        self.jobs.append(job)

    def _logprobs_json(self, words: list[LiveWord]) -> list[dict[str, Any]] | None:
        if not self.logprobs:
            return None
        return [
            {"token": w.text, "logprob": w.logprob if w.logprob is not None else 0.0, "bytes": list(w.text.encode())}
            for w in words
        ]

    def _send_delta(self, item: ItemTranscript, words: list[LiveWord]) -> None:
        if words:
            self.outbox.append(
                self.events.transcription_delta(item.item_id, delta_text(words), self._logprobs_json(words))
            )

    def _usage(self, item: ItemTranscript, transcript: Transcript) -> dict[str, Any]:
        transcription = self.input_config.transcription
        seconds = (item.audio.size if item.audio is not None else 0) / RATE
        if transcription is not None and transcription.model.startswith("gpt-"):
            transcript.duration = seconds
            return token_usage(transcript)
        return {"type": "duration", "seconds": round(seconds, 3)}

    def _finish(self, item: ItemTranscript, transcript: Transcript) -> None:
        if transcript.text.strip():
            self._heard_language = transcript.language
        self._send_delta(item, item.live.finish(transcript))
        item.done = True
        text = item.live.text
        if item.audio is not None:
            words = tuple(w.key for w in item.live.sent if w.key)
            ended = text.rstrip()[-1:] in (".", "!", "?", "。", "！", "？")
            turn = PreviousTurn(item.audio, words, item.start, item.end, self._context, ended)
            gap = self.env.turn_audio_gap_ms * RATE // 1000
            self._previous = turn_run(self._previous, turn, gap, int(self.env.turn_audio_context_seconds * RATE))
        if text.strip():
            self._context = _tail(f"{self._context} {text.strip()}".strip(), CONTEXT_CHARS)
        self.outbox.append(
            self.events.transcription_completed(
                item.item_id, text, self._usage(item, transcript), self._logprobs_json(item.live.sent)
            )
        )
        self._emit_item_done(item, text)
        self._release(item)

    def _fail(self, item: ItemTranscript, exc: BaseException) -> None:
        item.done = True
        if isinstance(exc, VoxError):
            message, code = exc.message, exc.code or "transcription_failed"
        else:
            log.error("transcription failed: %r", exc)
            message, code = "The audio could not be transcribed.", "transcription_failed"
        self.outbox.append(self.events.transcription_failed(item.item_id, message, code))
        self._emit_item_done(item, None)
        self._release(item)

    def _release(self, item: ItemTranscript) -> None:
        self._items.pop(item.item_id, None)
        item.audio = None
        if self._finals and self._finals[0] is item:
            self._finals.popleft()


def _tail(text: str, chars: int) -> str:
    """The last `chars` characters of `text`, starting at a word."""
    if len(text) <= chars:
        return text
    cut = text[-chars:]
    return cut.split(" ", 1)[1] if " " in cut else cut
