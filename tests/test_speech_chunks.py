"""Unit tests for chunk planning: where speech found by the VAD is cut into Whisper windows."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from voxserve.engines.chunk_coverage import worth_aligning
from voxserve.engines.speech_chunks import (
    FRAME,
    SAMPLE_RATE,
    ChunkPolicy,
    Detection,
    StagedPlan,
    plan_chunks,
    speech_regions,
)

FRAMES_PER_SECOND = SAMPLE_RATE / FRAME  # 31.25


def probs_from(pattern: list[tuple[float, float]]) -> np.ndarray:
    """A probability track from (seconds, probability) pieces."""
    return np.concatenate([np.full(round(seconds * FRAMES_PER_SECOND), p, np.float32) for seconds, p in pattern])


def seconds(samples: int) -> float:
    return samples / SAMPLE_RATE


DETECTION = Detection(threshold=0.5, padding_ms=400, silence_ms=1000)


def test_regions_use_hysteresis() -> None:
    # 0.4 is below the threshold but above threshold - 0.15: it continues speech, never starts it.
    probs = np.array([0.0, 0.4, 0.9, 0.4, 0.4, 0.1, 0.1, 0.1, 0.9, 0.1], np.float32)
    assert speech_regions(probs, 0.5, 3) == [(2, 5), (8, 9)]
    assert speech_regions(probs, 0.5, 4) == [(2, 9)]
    assert speech_regions(np.zeros(50, np.float32), 0.5, 3) == []


def test_silence_gives_no_chunks() -> None:
    probs = probs_from([(30, 0.02)])
    assert plan_chunks(probs, len(probs) * FRAME, DETECTION) == []


def test_one_utterance_is_one_padded_chunk() -> None:
    probs = probs_from([(1.0, 0.0), (3.0, 0.9), (2.0, 0.0)])
    total = len(probs) * FRAME
    [chunk] = plan_chunks(probs, total, DETECTION)
    assert abs(seconds(chunk.start) - 0.6) < 0.05
    assert abs(seconds(chunk.end) - 4.4) < 0.05
    assert abs(chunk.speech_seconds - 3.0) < 0.05  # the padding is not speech


def test_a_chunk_knows_how_much_of_it_is_speech() -> None:
    probs = probs_from([(2, 0.9), (0.5, 0.0), (2, 0.9), (5, 0.0), (2, 0.9)])
    chunks = plan_chunks(probs, len(probs) * FRAME, DETECTION)
    assert [round(c.speech_seconds, 1) for c in chunks] == [4.0, 2.0]  # the 0.5 s pause is not speech


def test_only_a_chunk_short_of_text_for_its_speech_is_aligned() -> None:
    """The coverage check's alignment runs on every chunk until the input's own rate is known, then only
    where a chunk's text is short for its speech beside that rate (or its speech is not known)."""
    assert worth_aligning([15.0, 9.0], [15.0, 9.0]) == [True, True]  # too few chunks to know the rate
    known = [15.0, 16.0, 14.5, 15.5, 13.0, 15.2]
    assert worth_aligning([15.0, 14.5, 13.0, None], known) == [False, False, True, True]


def test_short_pauses_stay_inside_a_chunk_and_long_silences_are_skipped() -> None:
    probs = probs_from([(2, 0.9), (0.5, 0.0), (2, 0.9), (5, 0.0), (2, 0.9)])
    total = len(probs) * FRAME
    chunks = plan_chunks(probs, total, DETECTION)
    assert len(chunks) == 2
    assert seconds(chunks[0].end) < 5.0 and seconds(chunks[1].start) > 9.0  # the 5 s silence is not decoded
    assert seconds(chunks[0].start) == 0.0 and chunks[1].end == total


def test_long_speech_is_cut_at_its_longest_pause() -> None:
    # Speech in 4 s phrases with 0.2 s pauses, one 0.6 s pause at about 20 s.
    pattern: list[tuple[float, float]] = []
    for index in range(12):
        pattern += [(4, 0.9), (0.6 if index == 4 else 0.2, 0.0)]
    probs = probs_from(pattern)
    chunks = plan_chunks(probs, len(probs) * FRAME, DETECTION)
    assert abs(seconds(chunks[0].end) - 21.1) < 0.1  # the middle of the 0.6 s pause at 20.8 s
    assert all(c.seconds <= 30.0 for c in chunks)
    assert all(a.end == b.start for a, b in itertools.pairwise(chunks))


def test_a_turn_ending_pause_is_preferred() -> None:
    pattern = [(17, 0.9), (1.2, 0.0), (8, 0.9), (0.7, 0.0), (10, 0.9)]
    probs = probs_from(pattern)
    chunks = plan_chunks(probs, len(probs) * FRAME, DETECTION)
    assert abs(seconds(chunks[0].end) - 17.4) < 0.1  # 1.2 s is a turn (>= 1 s), 0.7 s is not


def test_unbroken_speech_is_cut_at_its_quietest_moment() -> None:
    probs = probs_from([(25, 0.95), (0.1, 0.6), (25, 0.95)])
    chunks = plan_chunks(probs, len(probs) * FRAME, DETECTION)
    assert len(chunks) == 2
    assert abs(seconds(chunks[0].end) - 25.0) < 0.1
    assert chunks[0].end == chunks[1].start


def test_first_chunk_can_be_shorter() -> None:
    pattern: list[tuple[float, float]] = []
    for _ in range(10):
        pattern += [(3, 0.9), (0.3, 0.0)]
    probs = probs_from(pattern)
    policy = ChunkPolicy(first_max_seconds=8.0)
    chunks = plan_chunks(probs, len(probs) * FRAME, DETECTION, policy)
    assert chunks[0].seconds <= 8.0 and chunks[1].seconds > 8.0


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(
        st.tuples(st.floats(0.03, 40.0), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=30,
    ),
    threshold=st.floats(0.2, 0.8),
    padding_ms=st.integers(0, 800),
    silence_ms=st.integers(100, 2000),
)
def test_chunks_are_ordered_bounded_and_cover_all_speech(
    pieces: list[tuple[float, float]], threshold: float, padding_ms: int, silence_ms: int
) -> None:
    probs = probs_from(pieces)
    if probs.size == 0:
        return
    total = len(probs) * FRAME - 100  # the last frame is partial
    detection = Detection(threshold, padding_ms, silence_ms)
    chunks = plan_chunks(probs, total, detection)
    for chunk in chunks:
        assert 0 <= chunk.start < chunk.end <= total
        assert chunk.seconds <= 30.0 + 1e-9
    for before, after in itertools.pairwise(chunks):
        assert before.end <= after.start
    # Every frame the VAD calls speech is inside some chunk.
    for start, end in speech_regions(probs, threshold, 3):
        for frame in range(start, end):
            sample = min(frame * FRAME, total - 1)
            assert any(c.start <= sample < c.end for c in chunks), (frame, chunks)


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.tuples(st.floats(0.03, 20.0), st.floats(0.0, 1.0)), min_size=1, max_size=30),
    first_max=st.floats(3.0, 30.0),
    padding_ms=st.integers(0, 800),
    min_fill=st.sampled_from([0.5, 0.9]),
    ahead=st.booleans(),
)
# Found by a clean clone's run: the early plan heard under 30 s and did not hold the first chunk to first_max.
@example(
    pieces=[(3.0, 1.0), (2.0, 0.0), (11.5, 1.0), (2.5, 0.0), (1.0, 1.0), (11.0, 0.0)],
    first_max=16.0,
    padding_ms=0,
    min_fill=0.5,
    ahead=False,
)
def test_a_staged_plan_is_the_plan_of_the_whole_input(
    pieces: list[tuple[float, float]], first_max: float, padding_ms: int, min_fill: float, ahead: bool
) -> None:
    """Planning the first chunk from the opening seconds and the rest later (heard in the background
    or not) gives the same chunks."""
    probs = probs_from(pieces)
    total = len(probs) * FRAME
    policy = ChunkPolicy(first_max_seconds=first_max, min_fill=min_fill)
    detection = Detection(0.5, padding_ms, 1000)
    # The "audio" is its own sample index, so the VAD stand-in knows which frames it is asked about.
    audio = np.arange(total, dtype=np.float64)

    def hear(samples: np.ndarray) -> np.ndarray:
        first = int(samples[0]) // FRAME if samples.size else 0
        return probs[first : first + -(-samples.size // FRAME)]

    staged = StagedPlan(audio, detection, policy, hear, ahead=ahead)
    assert staged.first + staged.rest() == plan_chunks(probs, total, detection, policy)


def test_fuller_windows_cut_at_a_later_pause_and_the_first_chunk_keeps_its_choice() -> None:
    # Sentences of 17 s ending in turn-ending pauses (1.2 s), with 0.3 s pauses every 4 s: at least half
    # full, a chunk ends at a sentence (17.7 s); at least 90% full, at the last short pause that fits.
    pattern: list[tuple[float, float]] = []
    for _ in range(8):
        pattern += [(4, 0.9), (0.3, 0.0)] * 3 + [(4, 0.9), (1.2, 0.0)]
    probs = probs_from(pattern)
    total = len(probs) * FRAME
    half = plan_chunks(probs, total, DETECTION, ChunkPolicy(first_max_seconds=10.0))
    full = plan_chunks(probs, total, DETECTION, ChunkPolicy(first_max_seconds=10.0, min_fill=0.9))
    assert half[0] == full[0]  # the first chunk, held to 10 s, is cut as before
    assert len(full) < len(half)
    assert all(c.seconds < 18.0 for c in half[2:]) and all(c.seconds > 26.5 for c in full[1:])
    assert all(c.seconds <= 30.0 for c in full)
