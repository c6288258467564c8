"""Language detection's decisions without a model: when the full window is encoded, when languages are decoded."""

from __future__ import annotations

from typing import Any

import pytest

from voxserve.engines import whisper_language
from voxserve.engines.whisper_language import detect

TRIMMED = "trimmed encoding"
FULL = "full encoding"


class _Encodings:
    def __init__(self) -> None:
        self.full_calls = 0

    def full(self) -> Any:
        self.full_calls += 1
        return lambda copies: FULL if copies == 1 else (FULL, copies)


@pytest.fixture
def verdicts(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    table: dict[str, Any] = {"decoded": None}

    def probabilities(model: object, encoded: object) -> dict[str, float]:
        return table[encoded]  # type: ignore[index]

    def by_decoding(model: object, encoded: Any, languages: list[str], beam_size: int) -> str:
        table["decoded"] = (languages, encoded(len(languages)))
        return table["winner"]

    monkeypatch.setattr(whisper_language, "probabilities", probabilities)
    monkeypatch.setattr(whisper_language, "by_decoding", by_decoding)
    return table


def test_a_clear_trimmed_verdict_is_taken(verdicts: dict[str, Any]) -> None:
    verdicts[TRIMMED] = {"de": 0.92, "en": 0.05}
    encodings = _Encodings()
    verdict = detect(object(), TRIMMED, encodings.full, 0.5, 5)  # type: ignore[arg-type]
    assert (verdict.language, verdict.full_window, encodings.full_calls) == ("de", False, 0)


def test_an_unsure_trimmed_verdict_is_replaced_by_the_full_window(verdicts: dict[str, Any]) -> None:
    verdicts[TRIMMED] = {"hi": 0.3, "es": 0.2}
    verdicts[FULL] = {"es": 0.7, "hi": 0.1}
    encodings = _Encodings()
    verdict = detect(object(), TRIMMED, encodings.full, 0.5, 5)  # type: ignore[arg-type]
    assert (verdict.language, verdict.probability, verdict.full_window) == ("es", 0.7, True)
    assert verdicts["decoded"] is None


def test_when_both_are_unsure_the_top_three_are_decoded(verdicts: dict[str, Any]) -> None:
    verdicts[TRIMMED] = {"sw": 0.19, "hi": 0.15, "es": 0.11}
    verdicts[FULL] = {"el": 0.27, "hi": 0.23, "es": 0.13, "sw": 0.04}
    verdicts["winner"] = "es"
    verdict = detect(object(), TRIMMED, _Encodings().full, 0.5, 5)  # type: ignore[arg-type]
    assert verdicts["decoded"] == (["el", "hi", "es"], (FULL, 3))
    assert (verdict.language, verdict.probability) == ("es", 0.13)


def test_without_a_full_window_the_trimmed_verdict_stands(verdicts: dict[str, Any]) -> None:
    verdicts[TRIMMED] = {"hi": 0.3, "es": 0.2}
    verdict = detect(object(), TRIMMED, None, 0.5, 5)  # type: ignore[arg-type]
    assert (verdict.language, verdict.full_window, verdicts["decoded"]) == ("hi", False, None)
