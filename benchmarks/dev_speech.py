"""The dev-speech set (real recordings with reference transcripts) and how transcripts are scored on it.

English is scored by word error rate after whisper-normalizer's English normaliser (Whisper's own); other
languages after its basic normaliser; Japanese and Chinese by character error rate, after converting
traditional characters to simplified (Whisper often writes Chinese in traditional script, the references
are simplified). A set's figure is its total edits over its total reference words (or characters).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from voxserve.audio.decode import STT_SAMPLE_RATE, decode_audio

DEV_SPEECH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dev-speech"
SETS = ("en", "long", "multi")
CHARACTER_LANGUAGES = ("ja", "zh")


@dataclass(frozen=True)
class Clip:
    id: str
    set: str
    lang: str
    path: Path
    text: str
    duration: float

    @property
    def audio(self) -> np.ndarray:
        return _decoded(self.path)


@cache
def _decoded(path: Path) -> np.ndarray:
    with path.open("rb") as source:
        return decode_audio(io.BytesIO(source.read()))


def clips(root: Path = DEV_SPEECH, sets: Iterable[str] = SETS) -> list[Clip]:
    wanted = set(sets)
    found = []
    for line in (root / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        clip_set = row["path"].split("/", 1)[0]
        if clip_set in wanted:
            found.append(
                Clip(row["id"], clip_set, row["lang"], root / row["path"], row["text"], float(row["duration_s"]))
            )
    return found


@cache
def _english() -> object:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@cache
def _basic() -> object:
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


@cache
def _to_simplified() -> object:
    import opencc

    return opencc.OpenCC("t2s")


def normalise(text: str, lang: str) -> str:
    if lang == "en":
        return _english()(text)  # type: ignore[operator]
    if lang in CHARACTER_LANGUAGES:
        text = _to_simplified().convert(text)  # type: ignore[attr-defined]
        return "".join(_basic()(text).split())  # type: ignore[operator]
    return _basic()(text)  # type: ignore[operator]


@dataclass(frozen=True)
class Score:
    errors: int
    units: int  # reference words, or characters for ja/zh

    @property
    def rate(self) -> float:
        return self.errors / self.units if self.units else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(self.errors + other.errors, self.units + other.units)


def score(reference: str, hypothesis: str, lang: str) -> Score:
    """Edits (substitutions + deletions + insertions) against the normalised reference."""
    import jiwer

    ref, hyp = normalise(reference, lang), normalise(hypothesis, lang)
    if lang in CHARACTER_LANGUAGES:
        ref_units, hyp_units = list(ref), list(hyp)
    else:
        ref_units, hyp_units = ref.split(), hyp.split()
    if not ref_units:
        return Score(len(hyp_units), 0)
    out = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units) or "")
    return Score(out.substitutions + out.deletions + out.insertions, len(ref_units))


def total(scores: Iterable[Score]) -> Score:
    result = Score(0, 0)
    for item in scores:
        result = result + item
    return result


def seconds(clip: Clip) -> float:
    return len(clip.audio) / STT_SAMPLE_RATE
