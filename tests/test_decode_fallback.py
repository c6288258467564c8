"""The decode fallback without a model: which rungs run, with which prompts, and what is kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxserve.engines.decode_fallback import Decoded, PromptShape, Thresholds, decode, rungs, unfit_as_context

SHAPE = PromptShape(sot_prev=1, sot=2, no_timestamps=3)
TIMESTAMPED = [2, 50, 51]  # sot, language, task
TEXT_ONLY = [*TIMESTAMPED, 3]
PROMPTED = [1, 7, 8, *TIMESTAMPED]


@dataclass
class _Output:
    sequences_ids: list[list[int]]
    scores: list[float]
    no_speech_prob: float = 0.01


class _Script:
    """A fake CTranslate2 `generate`: each call returns the next scripted (tokens, score) per window."""

    def __init__(self, *replies: list[tuple[list[int], float]]) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[list[int], list[list[int]], dict[str, Any]]] = []

    def __call__(self, indices: list[int], prompts: list[list[int]], options: dict[str, Any]) -> list[Any]:
        self.calls.append((indices, prompts, options))
        return [_Output([tokens], [score]) for tokens, score in self.replies.pop(0)]


def _text(tokens: list[int]) -> str:
    return " ".join("loop" if t == 99 else f"w{t}" for t in tokens)


def _run(script: _Script, prompts: list[list[int]], temperature: float = 0.0) -> Any:
    return decode(
        script, prompts, _text, temperature=temperature, beam_size=5, best_of=5, thresholds=Thresholds(), shape=SHAPE
    )


def test_a_good_first_decode_is_kept_alone() -> None:
    script = _Script([([10, 11, 12], -0.2)])
    (result,), fallbacks = _run(script, [TIMESTAMPED])
    assert result.tokens == [10, 11, 12] and result.fallback == 0 and result.temperature == 0.0
    assert fallbacks == 0 and len(script.calls) == 1 and script.calls[0][2] == {"beam_size": 5}


def test_a_loop_is_retried_deterministically_and_only_that_window() -> None:
    loop = [99] * 40
    script = _Script([([10, 11], -0.2), (loop, -0.1)], [([12, 13, 14], -0.3)])
    results, fallbacks = _run(script, [TIMESTAMPED, PROMPTED])
    assert [r.tokens for r in results] == [[10, 11], [12, 13, 14]]
    assert results[1].fallback == 1 and results[1].temperature == 0.0 and fallbacks == 1
    indices, prompts, options = script.calls[1]
    assert indices == [1] and prompts == [[*PROMPTED, 3]]  # the other timestamp mode
    assert options == {"beam_size": 5} and "sampling_temperature" not in options


def test_the_last_rung_drops_the_prompt_and_blocks_repeats() -> None:
    script = _Script([([10], -3.0)], [([11], -2.8)], [([12], -1.0)])  # averaged over 2: -1.5, -1.4, -0.5
    (result,), fallbacks = _run(script, [[*PROMPTED, 3]])
    assert result.tokens == [12] and result.fallback == 2 and fallbacks == 2
    assert script.calls[1][1] == [PROMPTED]
    assert script.calls[2][1] == [TEXT_ONLY]
    assert script.calls[2][2] == {"beam_size": 5, "no_repeat_ngram_size": 3}


def test_when_every_rung_fails_the_most_probable_non_loop_is_kept() -> None:
    script = _Script([([99] * 40, -0.1)], [([11], -3.6)], [([12], -2.6)])
    (result,), _ = _run(script, [TIMESTAMPED])
    assert result.tokens == [12] and result.fallback == 2


def test_silence_is_not_retried() -> None:
    class _Quiet(_Script):
        def __call__(self, indices: list[int], prompts: list[list[int]], options: dict[str, Any]) -> list[Any]:
            return [_Output([[10]], [-3.0], no_speech_prob=0.9)]

    (result,), fallbacks = _run(_Quiet(), [TIMESTAMPED])
    assert fallbacks == 0 and result.fallback == 0


def test_a_requested_temperature_samples_as_whisper_does() -> None:
    assert [t for t, _ in rungs(0.4, 5, 5)] == [0.4, 0.6, 0.8, 1.0]
    assert rungs(0.4, 5, 5)[0][1] == {
        "beam_size": 1,
        "num_hypotheses": 5,
        "sampling_topk": 0,
        "sampling_temperature": 0.4,
    }
    assert all(t == 0.0 and "sampling_temperature" not in o for t, o in rungs(0.0, 5, 5))


def _decoded(temperature: float, fallback: int) -> Decoded:
    return Decoded([10, 11], -0.3, temperature, 1.2, 0.01, fallback)


def test_only_a_last_rung_or_hot_sample_stops_conditioning() -> None:
    assert not unfit_as_context(_decoded(0.0, 0))
    assert not unfit_as_context(_decoded(0.0, 1))  # the other timestamp mode: still a clean beam search
    assert unfit_as_context(_decoded(0.0, 2))  # needed the rung that drops the earlier text, or every rung failed
    assert not unfit_as_context(_decoded(0.4, 1))
    assert unfit_as_context(_decoded(0.6, 2))  # Whisper's own rule for a sampled result


def test_conditioning_on_previous_text_restarts_after_a_deterministic_fallback() -> None:
    """`TranscriptionRun._split` with condition_on_previous_text: at temperature 0 nothing is sampled, so the
    restart must follow the fallback rung, not the temperature (which stays 0)."""
    from faster_whisper.tokenizer import Tokenizer
    from tokenizers import Tokenizer as HfTokenizer

    from voxserve import bundled
    from voxserve.engines.chunk_batches import Job
    from voxserve.engines.speech_chunks import Chunk
    from voxserve.engines.whisper import DecoderSettings, TranscriptionRun

    tokenizer = Tokenizer(HfTokenizer.from_file(str(bundled.whisper_tiny_en_dir() / "tokenizer.json")), False)
    run = TranscriptionRun.__new__(TranscriptionRun)
    run._settings = DecoderSettings(condition_on_previous_text=True)
    run._tokenizer = tokenizer
    run._thresholds = Thresholds()
    run._previous = []
    job = Job(Chunk(0, 16000 * 4), 0)
    said = tokenizer.encode(" Hello there.")
    pieces, _ = run._split(job, Decoded(said, -0.3, 0.0, 1.2, 0.01, 0), 400)
    assert pieces and run._previous == said
    pieces, _ = run._split(job, Decoded(said, -0.9, 0.0, 1.2, 0.01, 2), 400)
    assert pieces and run._previous == []  # the text is still emitted, just not conditioned on
