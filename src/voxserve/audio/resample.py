"""Streaming sample-rate conversion (FFmpeg's swresample via PyAV) for audio that arrives in pieces."""

from __future__ import annotations

import av
import numpy as np


class StreamResampler:
    """Mono samples at `in_rate` in, float32 at `out_rate` out, keeping the filter state between pieces.

    The converter holds back a few samples (its filter delay, about 1 ms) until more input arrives, so
    a stream that is cut at any point loses at most that much at its very end.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler = None if in_rate == out_rate else av.AudioResampler(format="flt", layout="mono", rate=out_rate)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """int16 or float32 (-1..1) samples; returns float32 samples at the output rate."""
        if self._resampler is None or samples.size == 0:
            return _as_float(samples)
        if samples.dtype == np.int16:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
            )
        frame.sample_rate = self.in_rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    return samples.astype(np.float32, copy=False)
