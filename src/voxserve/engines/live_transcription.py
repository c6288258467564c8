"""Live transcription of an utterance while it is still being spoken.

The growing audio of the utterance is decoded again and again (each decode a greedy Whisper run on
everything so far, on the trimmed window only). `LiveTranscript` sends as a delta only text that
several successive decodes agree on (the session uses three), short of the newest decode's last words
(two), so a word cut off at the edge of the audio is never sent; the final decode of the whole
utterance (beam search, as the REST endpoint) then supplies the rest. benchmarks/realtime.py measures
how many words live deltas change against final decodes alone. Text once sent is never taken back:
the final transcript is the sent text followed by the part of the final decode that comes after it,
so the deltas of an item always join exactly to its `completed` transcript.

`DecodeRunner` runs those decodes on the speech-to-text gate: live (partial) decodes only when the gate
has a slot free and another to spare, so under load they are skipped and the final decodes keep up;
final decodes wait in the gate's queue like any request, and retry while the queue is full.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import itertools
import math
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from voxserve.engines.decode_fallback import Thresholds
from voxserve.engines.registry import ModelSpec
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.whisper import TranscribeOptions
from voxserve.errors import Overloaded
from voxserve.transcript import Transcript

_WORD = re.compile(r"\s*\S+")
# Whisper's verdict that a decode is improbable (its fallback's threshold): such a live reading is not
# counted. A reading that loops is counted up to where it starts to repeat itself (`before_repeat`).
FAILED_LOGPROB = Thresholds().log_prob
# A run of this many words read again marks the start of a loop.
REPEAT_WORDS = 3


@dataclass(frozen=True)
class LiveWord:
    text: str  # as it appears in the transcript, with its leading space
    logprob: float | None = None
    end: float | None = None  # seconds from the start of the decoded audio, when words were timed

    @property
    def key(self) -> str:
        return normalize_word(self.text)


def normalize_word(word: str) -> str:
    """Lower case, letters and digits only: "Hello," and "hello" are the same word."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", word).casefold() if ch.isalnum())


def words_of(transcript: Transcript) -> list[LiveWord]:
    """The transcript's text cut into words, each with the log-probability Whisper gave it (when known)."""
    text = transcript.text
    pieces = _WORD.findall(text)
    timed = transcript.words
    if timed and "".join(w.word for w in timed).strip() == text.strip():
        out = [LiveWord(w.word, math.log(max(w.probability, 1e-12)), w.end) for w in timed]
        if out:
            out[0] = dataclasses.replace(out[0], text=out[0].text.lstrip())
        return [w for w in out if w.text]
    return [LiveWord(p) for p in pieces]


def aligned_end(sent: list[str], words: list[str]) -> int:
    """How many of `words` the already-sent words `sent` account for (both normalised).

    Usually the sent words are exactly the first words of a later decode; when that decode reads them
    differently, the last word they share places the cut.
    """
    if not sent:
        return 0
    if words[: len(sent)] == sent:
        return len(sent)
    blocks = [b for b in difflib.SequenceMatcher(None, sent, words, autojunk=False).get_matching_blocks() if b.size]
    if not blocks:
        return min(len(sent), len(words))
    last = blocks[-1]
    unmatched_after = len(sent) - (last.a + last.size)
    return min(len(words), last.b + last.size + unmatched_after)


@dataclass
class LiveTranscript:
    """The text of one utterance as it is sent: deltas while it grows, the rest when it is final.

    A word is sent from live decodes only once `agreement` successive decodes (all in one language)
    read it the same way, or once `sure_agreement` of them read it the same way and each gave it at
    least `sure_logprob` (a word Whisper is sure of need not wait for a third reading), and only when it
    is not at the edge of the newest decode's audio: not among its last `hold_back` words, or, when
    `hold_back_seconds` is set and the words are timed, not ending within that much of the audio's end.
    """

    hold_back: int = 1
    agreement: int = 2
    sure_agreement: int | None = None
    sure_logprob: float = math.log(0.9)
    unsure_logprob: float | None = None
    hold_back_seconds: float | None = None
    # A reading of at most this many words holds back only its last word: a turn's first words ("Not
    # 1.15", "In addition") would otherwise wait for a reading of three.
    short_reading: int = 0
    sent: list[LiveWord] = field(default_factory=list)
    _history: list[tuple[list[LiveWord], str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.sent)

    def _after_sent(self, words: list[LiveWord]) -> list[LiveWord]:
        keys = [w.key for w in words]
        return words[aligned_end([w.key for w in self.sent], keys) :]

    def _delta(self, words: list[LiveWord]) -> list[LiveWord]:
        if not words:
            return []
        if not self.sent:
            words = [dataclasses.replace(words[0], text=words[0].text.lstrip()), *words[1:]]
        elif not words[0].text[:1].isspace() and self.text[-1:].isalnum() and words[0].text[:1].isalnum():
            words = [dataclasses.replace(words[0], text=" " + words[0].text), *words[1:]]
        self.sent.extend(words)
        return words

    def _settled(self, readings: list[list[LiveWord]], languages: list[str], index: int) -> bool:
        """Whether the newest decodes agree on their word at `index` (see the class)."""

        def agree(n: int, sure: bool) -> bool:
            if len(readings) < n or len(set(languages[-n:])) > 1:
                return False
            column = [words[index] if index < len(words) else None for words in readings[-n:]]
            key = readings[-1][index].key
            if not key or any(w is None or w.key != key for w in column):
                return False
            if sure:  # a word is sure only when every decode timed it and gave it the probability
                return all(w.logprob is not None and w.logprob >= self.sure_logprob for w in column)  # type: ignore[union-attr]
            floor = self.unsure_logprob  # untimed words (a candidate's decode) pass: plain agreement
            return floor is None or all(w.logprob is None or w.logprob >= floor for w in column)  # type: ignore[union-attr]

        return agree(self.agreement, sure=False) or bool(self.sure_agreement and agree(self.sure_agreement, True))

    def _edge(self, words: list[LiveWord], audio_seconds: float, whole: int) -> int:
        """How many of the newest decode's words (`whole` with those already sent) may go out: those clear
        of the audio's edge."""
        if self.hold_back_seconds is not None and words and all(w.end is not None for w in words):
            limit = audio_seconds - self.hold_back_seconds
            return sum(1 for _ in itertools.takewhile(lambda w: w.end <= limit, words))  # type: ignore[operator]
        return len(words) - (min(self.hold_back, 1) if whole <= self.short_reading else self.hold_back)

    def update(self, transcript: Transcript, min_language_probability: float = 0.0) -> list[LiveWord]:
        """A decode of the utterance so far: returns the newly stable words (often none).

        Decodes agree only if they also heard the same language, detected with at least
        `min_language_probability`: language detection on a second or two of speech wavers, and
        text sent in the wrong language could not be taken back.
        """
        if transcript.language_probability < min_language_probability or improbable(transcript):
            return []  # not counted: the decodes around it may still agree
        self._history.append((before_repeat(words_of(transcript)), transcript.language))
        del self._history[: -max(1, self.agreement, self.sure_agreement or 1)]
        readings = [self._after_sent(words) for words, _ in self._history]
        languages = [language for _, language in self._history]
        current = readings[-1]
        agreed = sum(
            1 for _ in itertools.takewhile(lambda i: self._settled(readings, languages, i), range(len(current)))
        )
        # The newest decode's last words are held back even when all agree: they sit at the edge of
        # the audio, where a word still being spoken is read as a shorter one ("Hell" for "Hale").
        edge = self._edge(current, transcript.duration, len(self._history[-1][0]))
        return self._delta(current[: min(agreed, edge)])

    def finish(self, transcript: Transcript) -> list[LiveWord]:
        """The final decode: returns the words still to send; `text` is then the whole transcript."""
        return self._delta(self._after_sent(words_of(transcript)))


def improbable(transcript: Transcript) -> bool:
    return any(s.avg_logprob < FAILED_LOGPROB for s in transcript.segments)


def before_repeat(words: list[LiveWord], size: int = REPEAT_WORDS) -> list[LiveWord]:
    """The words up to the first run of `size` of them that was read before: Whisper, given a second or
    two of speech, often reads it again and again ("The governmental cons. The governmental cons."); a
    live decode is not decoded again when it loops, and its reading up to the loop is as good as any."""
    keys = [w.key for w in words]
    seen: set[tuple[str, ...]] = set()
    for start in range(len(keys) - size + 1):
        run = tuple(keys[start : start + size])
        if run in seen:
            return words[:start]
        seen.add(run)
    return words


def repeats(transcript: Transcript) -> bool:
    """Whether the transcript reads a run of words again (see `before_repeat`)."""
    words = words_of(transcript)
    return len(before_repeat(words)) < len(words)


def delta_text(words: list[LiveWord]) -> str:
    return "".join(w.text for w in words)


class DecodeRunner:
    """Runs one session's decodes on the shared speech-to-text gate."""

    def __init__(self, stt: SpeechToText, retry_seconds: float = 0.25, give_up_after: float = 60.0) -> None:
        self.stt = stt
        self.retry_seconds = retry_seconds
        self.give_up_after = give_up_after

    def has_free_slot(self) -> bool:
        """A live decode may start: nothing queued, and a slot stays free for a final decode."""
        gate = self.stt.gate
        spare = 1 if gate.concurrency > 1 else 0
        return gate.active + spare < gate.concurrency and gate.queued == 0

    async def partial(self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions) -> Transcript | None:
        """A live decode, or None when the gate is busy (it is skipped, never queued)."""
        if not self.has_free_slot():
            return None
        try:
            return await self.stt.transcribe_samples(spec, audio, options)
        except Overloaded:
            return None

    async def final(self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """The decode of a committed item: waits its turn, and retries while the queue is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.give_up_after
        while True:
            try:
                return await self.stt.transcribe_samples(spec, audio, options)
            except Overloaded:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(self.retry_seconds)
