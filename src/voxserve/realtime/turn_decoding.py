"""What a realtime session decodes, and how: its decode jobs, the items and turns they belong to, the
options of each decode (live, candidate or final), and when a live decode is due.

The session (`session.py`) decides from these which job to hand out next; nothing here keeps state of
its own or emits events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from voxserve.engines.live_transcription import LiveTranscript
from voxserve.engines.registry import ModelSpec
from voxserve.engines.whisper import DEFAULT_VAD, TranscribeOptions
from voxserve.errors import VoxError
from voxserve.realtime.config import InputTranscription
from voxserve.transcript import Transcript

if TYPE_CHECKING:
    from voxserve.realtime.session import SessionEnv

RATE = 16000
# A turn shorter than this is decoded in the language the session last heard (when the client named
# none): Whisper's language detection on a second or two of speech wavers.
SHORT_TURN_SECONDS = 3.0


@dataclass
class DecodeJob:
    item_id: str
    kind: str  # "partial" (live deltas), "candidate" (final audio if the pause lasts), "final"
    audio: np.ndarray
    end: int  # absolute sample position where the job's audio ends
    spec: ModelSpec
    options: TranscribeOptions


@dataclass
class ItemTranscript:
    item_id: str
    previous_item_id: str | None = None
    live: LiveTranscript = field(default_factory=LiveTranscript)
    audio: np.ndarray | None = None  # set when committed
    end: int = 0
    candidate: tuple[int, Transcript] | None = None
    done: bool = False


@dataclass
class Turn:
    """Speech in progress under server VAD: the item it will become, and where its audio lies."""

    item_id: str
    start: int  # where speech began
    audio_from: int  # start minus the prefix padding
    paused_until: int | None = None  # end of the candidate audio while a pause lasts
    last_partial: int = 0


def live_transcript(env: SessionEnv) -> LiveTranscript:
    """An item's live text, sent by the session's agreement rule."""
    unsure = env.live_unsure_probability
    return LiveTranscript(
        hold_back=env.live_hold_back_words,
        agreement=env.live_agreement,
        sure_agreement=env.live_sure_agreement,
        sure_logprob=math.log(env.live_sure_probability),
        unsure_logprob=None if unsure is None else math.log(unsure),
        hold_back_seconds=env.live_hold_back_seconds,
    )


def live_words_timed(env: SessionEnv) -> bool:
    """Whether the agreement rule needs the live decodes' words timed (and so their probabilities)."""
    return (
        env.live_sure_agreement is not None
        or env.live_unsure_probability is not None
        or env.live_hold_back_seconds is not None
    )


@dataclass(frozen=True)
class DecodeContext:
    """What the session knows that conditions a decode besides its audio."""

    heard_language: str | None  # the language the last final decode heard
    context: str  # the session's transcripts so far (their tail)
    logprobs: bool  # the client asked for logprobs (words timed on every decode)


def decode_options(
    env: SessionEnv, transcription: InputTranscription | None, known: DecodeContext, final: bool, samples: int = 0
) -> tuple[ModelSpec, TranscribeOptions] | None:
    """The model and options of a decode (`final`: a candidate or final one), or None when the session
    transcribes nothing or its model is gone."""
    if transcription is None:
        return None
    try:
        spec = env.resolve_stt(transcription.model)
    except VoxError:
        return None
    language = transcription.whisper_language
    short = samples < SHORT_TURN_SECONDS * RATE
    if language is None and known.heard_language is not None and (not final or short):
        language = known.heard_language
    options = TranscribeOptions(
        task="transcribe",
        language=language,
        prompt=transcription.prompt or (known.context if env.turn_context else None) or None,
        word_timestamps=known.logprobs or (not final and live_words_timed(env)),
        vad=DEFAULT_VAD,
        beam_size=env.beam_size if final else env.partial_beam_size,
        # A live decode's words wait for later decodes to agree: it need not pay for Whisper's
        # full 30 s window (ten times the cost of the trimmed one on a second or two of speech).
        trimmed_only=not final or env.final_trimmed_only,
    )
    return spec, options


def partial_due(env: SessionEnv, turn: Turn, now: int) -> bool:
    """Whether a live decode of the turn is due with its audio heard up to `now` (samples)."""
    young = now - turn.start < env.partial_quick_until_ms * RATE // 1000
    interval = (env.partial_quick_interval_ms if young else env.partial_interval_ms) * RATE // 1000
    return now - turn.start >= env.partial_min_ms * RATE // 1000 and now - turn.last_partial >= interval
