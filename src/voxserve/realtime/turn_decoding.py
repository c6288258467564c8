"""What a realtime session decodes, and how: its decode jobs, the items and turns they belong to, the
options of each decode (live, candidate or final), and when a live decode is due.

The session (`session.py`) decides from these which job to hand out next; nothing here keeps state of
its own or emits events.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from voxserve.engines.live_transcription import LiveTranscript, aligned_end, words_of
from voxserve.engines.registry import ModelSpec
from voxserve.engines.whisper import DEFAULT_VAD, TranscribeOptions
from voxserve.errors import VoxError
from voxserve.realtime.config import InputTranscription
from voxserve.transcript import Segment, Transcript

if TYPE_CHECKING:
    from voxserve.realtime.session_env import SessionEnv

RATE = 16000
# A turn shorter than this is decoded in the language the session last heard (when the client named
# none): Whisper's language detection on a second or two of speech wavers.
SHORT_TURN_SECONDS = 3.0
# A turn's whole prompt, in characters: well inside Whisper's 223 prompt tokens.
PROMPT_CHARS = 800
# A live decode's text, in tokens per second of its audio (with timestamp tokens): fast speech takes
# about 6; a reading that loops stops there (and is read up to its loop, see `before_repeat`).
LIVE_TOKENS_PER_SECOND = 10.0


@dataclass
class DecodeJob:
    item_id: str
    kind: str  # "partial" (live deltas), "candidate" (final audio if the pause lasts), "final"
    audio: np.ndarray
    end: int  # absolute sample position where the job's audio ends
    spec: ModelSpec
    options: TranscribeOptions
    # The words of the previous turns, whose audio leads this job's (see `PreviousTurn`): the decode's
    # reading of them is cut off its result.
    context_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreviousTurn:
    """A transcribed turn of the session. A turn that follows a run of them, each after a short pause,
    is decoded with their audio in front, as Whisper reads a clip that server VAD cut at its pauses in
    one piece: the words on either side of a cut read each other (the transcript's text alone, as the
    prompt, does not carry how the words sounded)."""

    audio: np.ndarray
    words: tuple[str, ...]  # its transcript's words, normalised
    start: int | None  # absolute samples where its audio begins (None: a manual commit) and ends
    end: int
    prompt: str  # the session's transcripts before it
    ends_sentence: bool = False  # its transcript ends with . ! ? (the next turn's text starts a sentence)


def turn_run(run: list[PreviousTurn], turn: PreviousTurn, gap: int, limit: int) -> list[PreviousTurn]:
    """The run of turns a next turn may be decoded after: `turn` joins `run` when it followed its last
    turn within `gap` samples; the oldest turns are dropped while the run holds over `limit` samples."""
    follows = bool(run) and turn.start is not None and 0 <= turn.start - run[-1].end <= gap
    kept = [*run, turn] if follows else [turn]
    while kept and sum(t.audio.size for t in kept) > limit:
        kept.pop(0)
    return kept


@dataclass
class ItemTranscript:
    item_id: str
    previous_item_id: str | None = None
    live: LiveTranscript = field(default_factory=LiveTranscript)
    audio: np.ndarray | None = None  # set when committed
    end: int = 0
    candidate: tuple[int, Transcript] | None = None
    done: bool = False
    start: int | None = None  # absolute sample where a VAD turn's audio begins (None: a manual commit)
    alone: bool = False  # decode without the previous turns' audio (a decode with it lost their words)
    unprompted: bool = False  # nor the session's earlier text (a decode with it read the turn twice over)


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
        short_reading=env.live_short_reading_words,
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
        prompt=turn_prompt(transcription.prompt, known.context if env.turn_context else ""),
        word_timestamps=known.logprobs or (not final and live_words_timed(env)),
        vad=DEFAULT_VAD,
        beam_size=env.beam_size if final else env.partial_beam_size,
        # A live decode's words wait for later decodes to agree: it need not pay for Whisper's
        # full 30 s window (ten times the cost of the trimmed one on a second or two of speech).
        trimmed_only=not final or env.final_trimmed_only,
        clip_window=False,
        # A live decode that fails is not counted (see `LiveTranscript.update`) rather than decoded again.
        retry_failed=final,
        max_tokens_per_second=None if final else LIVE_TOKENS_PER_SECOND,
    )
    return spec, options


def turn_prompt(client: str | None, context: str) -> str | None:
    """A turn's prompt: the client's own prompt (its vocabulary, its style), then the session's
    transcripts so far, so that Whisper reads the turn as their continuation. Whisper keeps a prompt's
    last 223 tokens: the session's text is cut to what fits beside the client's (about 4 characters a
    token), so the client's prompt is never the part cut."""
    client = (client or "").strip()
    room = max(0, PROMPT_CHARS - len(client) - 1)
    if len(context) > room:
        cut = context[len(context) - room :]
        context = cut.split(" ", 1)[1] if " " in cut else ""
    return " ".join(p for p in (client, context.strip()) if p) or None


def partial_due(env: SessionEnv, turn: Turn, now: int) -> bool:
    """Whether a live decode of the turn is due with its audio heard up to `now` (samples)."""
    young = now - turn.start < env.partial_quick_until_ms * RATE // 1000
    interval = (env.partial_quick_interval_ms if young else env.partial_interval_ms) * RATE // 1000
    return now - turn.start >= env.partial_min_ms * RATE // 1000 and now - turn.last_partial >= interval


# A decode whose reading of the previous turn matches fewer of its words than this is not trusted to
# place the cut (Whisper skipped or rewrote that turn): the turn is decoded again on its own.
CONTEXT_MATCH = 0.6


def after_context(transcript: Transcript, context: tuple[str, ...], sentence: bool = False) -> Transcript | None:
    """`transcript` (of the previous turns' audio followed by this turn's) less its reading of the
    previous turns, whose words are `context`; None when that reading cannot be placed. `sentence`:
    the previous turn's transcript ended a sentence, so this one starts with a capital, whatever the
    joint reading (often one sentence across the cut) made of it."""
    words = words_of(transcript)
    keys = [w.key for w in words]
    cut = aligned_end(list(context), keys)
    matcher = difflib.SequenceMatcher(None, list(context), keys[:cut], autojunk=False)
    if sum(b.size for b in matcher.get_matching_blocks()) < CONTEXT_MATCH * len(context):
        return None
    rest = words[cut:]
    timed = transcript.words
    kept = timed[len(timed) - len(rest) :] if timed and len(timed) == len(words) and rest else None
    text = "".join(w.text if i else " " + w.text.lstrip() for i, w in enumerate(rest))
    if sentence:
        text = _capitalized(text)
        if kept:
            kept = [dataclasses.replace(kept[0], word=_capitalized(kept[0].word)), *kept[1:]]
    head = transcript.segments[0] if transcript.segments else None
    segment = Segment(
        0,
        0,
        0.0,
        transcript.duration,
        text,
        own_tokens([t for s in transcript.segments for t in s.tokens], transcript.text, text),
        head.temperature if head else 0.0,
        head.avg_logprob if head else 0.0,
        head.compression_ratio if head else 0.0,
        head.no_speech_prob if head else 0.0,
        words=kept,
    )
    return Transcript(
        transcript.task,
        transcript.language,
        transcript.duration,
        [segment] if text.strip() else [],
        transcript.prompt_tokens,
        transcript.language_probability,
    )


def own_tokens(tokens: list[int], whole: str, own: str) -> list[int]:
    """The last of a decode's `tokens` (of its text `whole`) that spell its tail `own`, by their share
    of the characters: a turn's usage counts its own words, not the earlier turns' read before them
    (the session has no tokenizer; Whisper's BPE gives English about 4 characters a token either side)."""
    whole, own = whole.strip(), own.strip()
    if not own or not whole:
        return []
    count = min(len(tokens), max(1, round(len(tokens) * len(own) / len(whole))))
    return tokens[len(tokens) - count :]


def _capitalized(text: str) -> str:
    stripped = text.lstrip()
    return text[: len(text) - len(stripped)] + stripped[:1].upper() + stripped[1:]
