"""Whisper's decode of a batch of encoded windows, with a fallback for the windows whose text fails.

Whisper retries a window whose text loops (compression ratio above 2.4) or is improbable (average log
probability below -1) at rising sampling temperatures. CTranslate2's sampler draws from one generator
per worker thread, seeded once when the thread starts, so a request cannot be made reproducible: the
same clip decoded twice gave different text (a German clip's translation lost "Germany" one time in
several). When the request itself asks for temperature 0 (the default), the fallback here is
deterministic instead: each rung is another beam search that changes what usually makes a window fail,
and the same audio with the same options always gives the same text. A request that asks for a
temperature above 0 asked for sampling, and gets Whisper's own sampled ladder.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

# Beam search rungs tried, in order, after the request's own decode fails; each result is kept only if
# it passes, and when none does the most probable one that is not a loop is kept (as Whisper does).
# - the other timestamp mode: a window decoded with timestamp tokens that loops or stops early often
#   decodes cleanly as text only, and the reverse (they are two different searches over the audio);
# - no prompt or earlier text, and no repeated 3-grams: what drives a repetition loop.
DETERMINISTIC_RUNGS: tuple[dict[str, Any], ...] = (
    {"flip_timestamps": True},
    {"drop_prompt": True, "no_repeat_ngram_size": 3},
)


@dataclass
class Decoded:
    """One window's decoder result after the fallback."""

    tokens: list[int]
    avg_logprob: float
    temperature: float  # the sampling temperature that produced it (0: beam search)
    compression_ratio: float
    no_speech_prob: float
    fallback: int = 0  # how many fallback rungs were tried before it was accepted (0: the first decode)


def unfit_as_context(result: Decoded) -> bool:
    """Whether a window's text is too doubtful to condition the next window on.

    Whisper stops conditioning after a result it had to sample above temperature 0.5, three failed
    tries in. At temperature 0 the ladder here samples nothing, so its equivalent is a result that
    needed the last rung, the one that drops the earlier text (or that every rung failed).
    """
    if result.temperature > 0:
        return result.temperature > 0.5
    return result.fallback >= len(DETERMINISTIC_RUNGS)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def temperature_schedule(temperature: float) -> tuple[float, ...]:
    """0 means Whisper's own fallback ladder; a higher value starts the ladder there."""
    steps = []
    current = temperature
    while current <= 1.0 + 1e-9:
        steps.append(round(current, 2))
        current += 0.2
    return tuple(steps) or (temperature,)


@dataclass(frozen=True)
class Thresholds:
    compression_ratio: float = 2.4
    log_prob: float = -1.0
    no_speech: float = 0.6

    def failed(self, result: Decoded) -> bool:
        return result.compression_ratio > self.compression_ratio or result.avg_logprob < self.log_prob

    def silent(self, result: Decoded) -> bool:
        """Whisper's own verdict that a window holds no speech."""
        return result.no_speech_prob > self.no_speech and result.avg_logprob < self.log_prob


@dataclass(frozen=True)
class PromptShape:
    """The token ids that a rung uses to rewrite a window's prompt."""

    sot_prev: int
    sot: int
    no_timestamps: int

    def flip_timestamps(self, prompt: list[int]) -> list[int]:
        if prompt and prompt[-1] == self.no_timestamps:
            return prompt[:-1]
        return [*prompt, self.no_timestamps]

    def drop_prompt(self, prompt: list[int]) -> list[int]:
        if prompt and prompt[0] == self.sot_prev and self.sot in prompt:
            return prompt[prompt.index(self.sot) :]
        return prompt


def rungs(temperature: float, beam_size: int, best_of: int) -> list[tuple[float, dict[str, Any]]]:
    """(sampling temperature, how to decode) for each try, the request's own decode first."""
    if temperature > 0:
        return [
            (t, {"beam_size": 1, "num_hypotheses": best_of, "sampling_topk": 0, "sampling_temperature": t})
            for t in temperature_schedule(temperature)
        ]
    return [(0.0, {"beam_size": beam_size})] + [(0.0, {"beam_size": beam_size, **rung}) for rung in DETERMINISTIC_RUNGS]


Generate = Callable[[list[int], list[list[int]], dict[str, Any]], list[Any]]
"""(indices of the windows to decode, their prompts, CTranslate2 options) -> CTranslate2's results."""


def decode(
    generate: Generate,
    prompts: Sequence[list[int]],
    text_of: Callable[[list[int]], str],
    *,
    temperature: float,
    beam_size: int,
    best_of: int,
    thresholds: Thresholds,
    shape: PromptShape,
    retry: bool = True,
) -> tuple[list[Decoded], int]:
    """Every window's result, and how many fallback decodes of a window were run (`retry` False: none;
    a window whose first decode failed keeps it)."""
    best: list[Decoded | None] = [None] * len(prompts)
    tried: list[list[Decoded]] = [[] for _ in prompts]
    todo = list(range(len(prompts)))
    fallbacks = 0
    ladder = rungs(temperature, beam_size, best_of)
    for level, (sampling, options) in enumerate(ladder if retry else ladder[:1]):
        if not todo:
            break
        if level:
            fallbacks += len(todo)
        options = dict(options)
        rewrite: list[Callable[[list[int]], list[int]]] = []
        if options.pop("flip_timestamps", False):
            rewrite.append(shape.flip_timestamps)
        if options.pop("drop_prompt", False):
            rewrite.append(shape.drop_prompt)
        window_prompts = []
        for index in todo:
            prompt = list(prompts[index])
            for change in rewrite:
                prompt = change(prompt)
            window_prompts.append(prompt)
        outputs = generate(todo, window_prompts, options)
        still = []
        for index, output in zip(todo, outputs, strict=True):
            tokens = list(output.sequences_ids[0])
            result = Decoded(
                tokens,
                output.scores[0] * len(tokens) / (len(tokens) + 1),
                sampling,
                compression_ratio(text_of(tokens).strip()),
                output.no_speech_prob,
                level,
            )
            tried[index].append(result)
            if thresholds.failed(result) and not thresholds.silent(result):
                still.append(index)
            else:
                best[index] = result
        todo = still
    for index in todo:
        # Every rung failed: the most probable result that is not a repetition loop.
        fine = [r for r in tried[index] if r.compression_ratio <= thresholds.compression_ratio]
        chosen = max(fine or tried[index], key=lambda r: r.avg_logprob)
        best[index] = replace(chosen, fallback=tried[index][-1].fallback)
    return [r for r in best if r is not None], fallbacks
