"""Which language a clip is in, from its first window, for a request that did not say.

Whisper's language token is read from the trimmed window's encoding when it is clear. When it is not,
Whisper's exact input (the window padded to 30 s) is encoded and its verdict taken alone, as plain
Whisper does: the trimmed encoding is the one in doubt. When even that is unsure, two languages are
close (a 4 s Spanish clip of dev-speech: Greek 0.27, Hindi 0.23, Spanish 0.13), and a wrong language
makes the decode fail and fall back; the window is then decoded in each of the top languages (one beam
search for all) and the language whose text the model finds most probable is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ctranslate2
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

# Languages decoded when the detection is unsure. On that Spanish clip the window padded to 30 s ranks
# Greek 0.27, Hindi 0.23, Spanish 0.13: an unsure verdict is a short list, not a close pair.
CANDIDATES = 3


@dataclass(frozen=True)
class Verdict:
    language: str
    probability: float
    full_window: bool  # the verdict came from the window padded to 30 s (which is then decoded)


def probabilities(model: WhisperModel, encoded: ctranslate2.StorageView) -> dict[str, float]:
    return {token[2:-2]: p for token, p in model.model.detect_language(encoded)[0]}


def by_decoding(model: WhisperModel, encoded: Callable[[int], Any], languages: list[str], beam_size: int) -> str:
    """The language among `languages` whose text-only transcription has the best average log probability.

    `encoded(n)` gives the window's encoding repeated n times (one beam search serves every language)."""
    prompts = []
    for language in languages:
        tokenizer = Tokenizer(model.hf_tokenizer, True, task="transcribe", language=language)
        prompts.append([*tokenizer.sot_sequence, tokenizer.no_timestamps])
    outputs = model.model.generate(
        encoded(len(languages)), prompts, beam_size=beam_size, return_scores=True, max_length=model.max_length
    )
    scores = [output.scores[0] for output in outputs]
    return languages[max(range(len(languages)), key=scores.__getitem__)]


def detect(
    model: WhisperModel,
    trimmed: ctranslate2.StorageView,
    full: Callable[[], Callable[[int], Any]] | None,
    confidence: float,
    beam_size: int,
) -> Verdict:
    """The language of a window from its trimmed encoding, and when that is unsure (below `confidence`)
    from `full()`, the window padded to 30 s (None: the trimmed encoding is all there is)."""
    scores = probabilities(model, trimmed)
    best = max(scores, key=scores.__getitem__)
    if scores[best] >= confidence or full is None:
        return Verdict(best, scores[best], False)
    encoded = full()
    scores = probabilities(model, encoded(1))
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    best = ranked[0]
    if scores[best] < confidence:
        best = by_decoding(model, encoded, ranked[:CANDIDATES], beam_size)
    return Verdict(best, scores[best], True)
