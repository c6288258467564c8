"""Where Whisper listens: speech found by Silero VAD, cut into chunks that each fit one Whisper window.

A chunk is a contiguous stretch of the input, so a pause inside it stays a pause and its timestamps
are the input's own plus an offset. Chunks end in silence: at a pause long enough to end a turn
(`silence_duration_ms`), at a very long silence (never decoded), or, when speech runs on for longer
than a window, at the longest pause in the last part of the window. Audio outside every chunk is
silence or noise by the VAD's judgement and is never decoded, which is what keeps silence and noise
from turning into invented text.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per Silero VAD frame at 16 kHz (32 ms)


@dataclass(frozen=True)
class Chunk:
    start: int  # first sample
    end: int  # one past the last sample
    # Samples of it the VAD heard as speech (0: not known, as for the rest of a chunk decoded again).
    speech: int = field(default=0, compare=False)

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def speech_seconds(self) -> float:
        return self.speech / SAMPLE_RATE


@dataclass(frozen=True)
class ChunkPolicy:
    """How speech is grouped into Whisper windows (see README, "Speech-to-text accuracy and speed")."""

    max_seconds: float = 30.0  # one Whisper window
    # The first chunk of audio longer than a window is kept short, so a streamed transcription's
    # first words come early; shorter chunks lose some context, so only the first one is held back.
    first_max_seconds: float = 30.0
    # The same for a streamed transcription, whose first delta waits for the first chunk.
    stream_first_max_seconds: float = 30.0
    # When speech fills a window, cut at the longest pause that leaves the chunk at least this full.
    min_fill: float = 0.5
    # The same for the first chunk, when it is held short for an early first delta: a wider choice of
    # pauses matters more there than a full window.
    first_min_fill: float = 0.5
    # A silence this long always ends a chunk; Whisper is not asked to sit through it.
    max_gap_seconds: float = 2.0
    # Pauses shorter than this are never a cut point (a cut inside a word loses it).
    min_pause_ms: int = 100


@dataclass(frozen=True)
class Detection:
    threshold: float = 0.5
    padding_ms: int = 400  # kept around speech on each side
    silence_ms: int = 1000  # a pause this long ends a turn


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 512-sample frame of 16 kHz audio."""
    from faster_whisper.vad import get_vad_model

    if audio.size == 0:
        return np.zeros(0, dtype=np.float32)
    padded = np.pad(audio, (0, FRAME - audio.size % FRAME))
    return np.asarray(get_vad_model()(padded), dtype=np.float32).reshape(-1)[: -(-audio.size // FRAME)]


def speech_regions(probs: np.ndarray, threshold: float, min_silence_frames: int) -> list[tuple[int, int]]:
    """Frames [start, end) of speech, with Silero's hysteresis: speech starts at `threshold`, and
    ends after `min_silence_frames` frames in a row below `threshold - 0.15`."""
    low = max(threshold - 0.15, 0.01)
    regions: list[tuple[int, int]] = []
    start: int | None = None
    quiet_since: int | None = None
    for index, prob in enumerate(probs.tolist()):
        if start is None:
            if prob >= threshold:
                start, quiet_since = index, None
            continue
        if prob >= threshold:
            quiet_since = None
        elif prob < low:
            if quiet_since is None:
                quiet_since = index
            if index - quiet_since + 1 >= min_silence_frames:
                regions.append((start, quiet_since))
                start = quiet_since = None
    if start is not None:
        regions.append((start, quiet_since if quiet_since is not None else len(probs)))
    return regions


def plan_chunks(
    probs: np.ndarray,
    total_samples: int,
    detection: Detection,
    policy: ChunkPolicy = ChunkPolicy(),
    input_samples: int | None = None,
) -> list[Chunk]:
    """Cut the input into chunks of speech, each at most one window long (see the module docstring).

    `input_samples`: the whole input's length when `probs` covers only its opening `total_samples`."""
    frames_per_ms = SAMPLE_RATE / FRAME / 1000
    words = speech_regions(probs, detection.threshold, max(1, round(policy.min_pause_ms * frames_per_ms)))
    # Speech stretches in samples; the pauses between them are the places a chunk may end.
    spans = [(s * FRAME, min(e * FRAME, total_samples)) for s, e in words]
    pad = round(detection.padding_ms * SAMPLE_RATE / 1000)
    turn_gap = detection.silence_ms * SAMPLE_RATE / 1000
    max_gap = policy.max_gap_seconds * SAMPLE_RATE

    chunks: list[Chunk] = []
    first = 0
    forced_start: int | None = None
    while first < len(spans):
        limit = int(policy.max_seconds * SAMPLE_RATE)
        if not chunks and (input_samples or total_samples) > limit:
            limit = int(min(policy.first_max_seconds, policy.max_seconds) * SAMPLE_RATE)
        if forced_start is not None:
            start, forced_start = forced_start, None
        else:
            start = max(0, spans[first][0] - pad, chunks[-1].end if chunks else 0)
        last = first
        while last + 1 < len(spans):
            if spans[last + 1][0] - spans[last][1] >= max_gap or spans[last + 1][1] - start > limit:
                break
            last += 1
        fill = policy.min_fill if chunks else policy.first_min_fill
        if spans[last][1] - start > limit:
            # Speech with no pause for longer than a window: cut at its quietest moment near the end.
            cut = _quietest(probs, start + int(fill * limit), start + limit)
            chunks.append(Chunk(start, cut, _heard(spans, start, cut)))
            spans[first] = (cut, spans[first][1])
            forced_start = cut
            continue
        if last + 1 < len(spans) and spans[last + 1][0] - spans[last][1] < max_gap:
            # Speech runs on past the window: end at the best pause rather than the last that fits.
            last = _best_cut(spans, first, last, start, limit * fill, turn_gap)
        end = spans[last][1] + pad
        if last + 1 < len(spans):
            # Padding stops at the middle of a pause: the next chunk owns the other half.
            end = min(end, (spans[last][1] + spans[last + 1][0]) // 2)
        end = min(end, total_samples, start + limit)
        chunks.append(Chunk(start, end, _heard(spans, start, end)))
        first = last + 1
    return chunks


def _heard(spans: list[tuple[int, int]], start: int, end: int) -> int:
    """Samples of speech in [start, end)."""
    return sum(max(0, min(e, end) - max(s, start)) for s, e in spans)


def _best_cut(
    spans: list[tuple[int, int]], first: int, last: int, start: int, min_length: float, turn_gap: float
) -> int:
    """The span after which to cut: among those that leave the chunk at least `min_length` long, the
    latest followed by a turn-ending pause, else the one followed by the longest pause."""
    candidates = [i for i in range(first, last + 1) if spans[i][1] - start >= min_length] or [last]
    gaps = {i: spans[i + 1][0] - spans[i][1] for i in candidates}
    turns = [i for i in candidates if gaps[i] >= turn_gap]
    if turns:
        return turns[-1]
    return max(candidates, key=lambda i: (gaps[i], i))


def _quietest(probs: np.ndarray, low: int, high: int) -> int:
    """The start (in samples) of the frame with the lowest speech probability in [low, high)."""
    first, stop = -(-low // FRAME), high // FRAME
    if stop <= first:
        return high
    return (first + int(np.argmin(probs[first:stop]))) * FRAME


# Whether a staged plan hears the rest of the input in the background (`StagedPlan`); a few threads
# serve every request, each VAD pass holding one core at most.
HEAR_AHEAD = True
_AHEAD = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vad-ahead")

# Frames of audio before the rest of the input that the VAD hears again, so its recurrent state has
# settled by the first frame it reports (Silero forgets a reset within a few hundred milliseconds).
_WARMUP_FRAMES = 32


class StagedPlan:
    """The chunks of an input, the first found from its opening seconds alone.

    On long audio the VAD over the whole input costs as much as decoding the first chunk (0.1 s a
    minute); a streamed transcription's first words need only the first chunk, so the rest of the
    input is heard when the first chunk is decoded. The chunks are the ones `plan_chunks` gives for
    the whole input: the first is taken early only when the speech after it decides where it ends.
    """

    def __init__(
        self,
        audio: np.ndarray,
        detection: Detection,
        policy: ChunkPolicy = ChunkPolicy(),
        hear: Callable[[np.ndarray], np.ndarray] = speech_probabilities,
        *,
        ahead: bool | None = None,
    ) -> None:
        self._audio = audio
        self._hear = hear
        self._detection = detection
        self._policy = policy
        self._probs: np.ndarray | None = None
        self._later: Future[np.ndarray] | None = None
        self.first: list[Chunk] = []
        limit = min(policy.first_max_seconds, policy.max_seconds)
        heard = (limit + policy.max_gap_seconds + 1.0 + detection.padding_ms / 1000) * SAMPLE_RATE
        heard = int(-(-heard // FRAME) * FRAME)
        if audio.size > policy.max_seconds * SAMPLE_RATE and audio.size > heard + _WARMUP_FRAMES * FRAME:
            probs = hear(audio[:heard])
            # The first chunk is held to `first_max_seconds` by the whole input's length, not what was heard.
            early = plan_chunks(probs, heard, detection, policy, input_samples=audio.size)
            # Taken early only when a later chunk starts within what was heard (so the first one ended
            # by the same rule it would on the whole input) and the first one starts soon enough that
            # everything its end depends on was heard.
            if len(early) >= 2 and early[0].start + (limit + policy.max_gap_seconds) * SAMPLE_RATE < heard:
                self._probs = probs
                self.first = early[:1]
                if HEAR_AHEAD if ahead is None else ahead:
                    # The VAD (onnxruntime, one thread) hears the rest while the first chunk is decoded.
                    self._later = _AHEAD.submit(self._hear_rest)
                return
        self.first = plan_chunks(hear(audio), audio.size, detection, policy)

    @property
    def pending(self) -> bool:
        """Whether more chunks may follow `first` (the rest of the input is not heard yet)."""
        return self._probs is not None

    def _hear_rest(self) -> np.ndarray:
        assert self._probs is not None
        start = self._probs.size * FRAME - _WARMUP_FRAMES * FRAME
        return self._hear(self._audio[start:])[_WARMUP_FRAMES:]

    def rest(self) -> list[Chunk]:
        """The chunks after `first`, from the VAD over the rest of the input."""
        if self._probs is None:
            return []
        later = self._later.result() if self._later is not None else self._hear_rest()
        probs = np.concatenate([self._probs, later])
        self._probs = None
        first = self.first[0]
        chunks = plan_chunks(probs, self._audio.size, self._detection, self._policy)
        return [replace(c, start=max(c.start, first.end)) for c in chunks if c.end > first.end + FRAME]
