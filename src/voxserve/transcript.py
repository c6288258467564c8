"""The result of speech-to-text, independent of both the engine and the wire format."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float

    @property
    def bytes(self) -> list[int]:
        return list(self.token.encode("utf-8"))

    @staticmethod
    def from_word(word: Word) -> TokenLogprob:
        return TokenLogprob(word.word, math.log(max(word.probability, 1e-12)))


@dataclass
class Transcript:
    task: str  # "transcribe" or "translate"
    language: str  # ISO code
    duration: float  # seconds of input audio
    segments: list[Segment] = field(default_factory=list)
    prompt_tokens: int = 0
    language_probability: float = 1.0  # how sure detection was (1.0 when the language was given)

    @property
    def text(self) -> str:
        return "".join(piece for piece in text_pieces(self.segments))

    @property
    def output_tokens(self) -> int:
        return sum(len(s.tokens) for s in self.segments)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in (s.words or [])]


def next_piece(segment: Segment, text_so_far: str) -> str:
    """The part of the transcript that `segment` adds after `text_so_far`.

    Streaming sends these pieces as deltas and the full `text` is their join, so a streamed and a
    non-streamed transcription of the same audio always agree.
    """
    piece = segment.text.rstrip()
    return piece if text_so_far else piece.lstrip()


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])(?=\s)")


def sentence_pieces(text: str) -> list[str]:
    """`text` cut after each sentence-ending mark that a space follows; the pieces join to `text`.

    Whisper's segments are phrases by its own timestamps and can hold several sentences; a stream
    sends each sentence as its own delta.
    """
    return [piece for piece in _SENTENCE_END.split(text) if piece] or [text]


def text_pieces(segments: list[Segment]) -> list[str]:
    pieces: list[str] = []
    text = ""
    for segment in segments:
        piece = next_piece(segment, text)
        pieces.append(piece)
        text += piece
    return pieces


def audio_tokens(duration: float) -> int:
    """Audio input expressed in tokens: one token per 100 ms, rounded up (documented in README)."""
    return math.ceil(duration * 10)
