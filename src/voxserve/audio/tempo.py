"""Change speaking rate without changing pitch, with FFmpeg's `atempo` filter (WSOLA).

Piper's length scale alone cannot do it: its phoneme durations are rounded up to whole frames, so
halving the scale shortens speech by only about 30%.
"""

from __future__ import annotations

import av
import av.filter
import numpy as np


def _atempo_steps(speed: float) -> list[float]:
    # One atempo instance covers 0.5..2.0 at its best quality; chain them for 0.25..4.0.
    steps = []
    remaining = speed
    while remaining > 2.0:
        steps.append(2.0)
        remaining /= 2.0
    while remaining < 0.5:
        steps.append(0.5)
        remaining /= 0.5
    steps.append(remaining)
    return steps


def change_tempo(samples: np.ndarray, sample_rate: int, speed: float) -> np.ndarray:
    """`samples` (float32 mono) played `speed` times faster at the same pitch.

    Called once per sentence: atempo holds output back until it sees more input, so a graph kept
    across a stream would delay every sentence until the next one; sentences end in silence anyway.
    """
    if abs(speed - 1.0) < 1e-3 or samples.size == 0:
        return samples
    graph = av.filter.Graph()
    source = graph.add_abuffer(format="flt", sample_rate=sample_rate, layout="mono", time_base=f"1/{sample_rate}")
    node = source
    for step in _atempo_steps(speed):
        stage = graph.add("atempo", f"{step:.6f}")
        node.link_to(stage)
        node = stage
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()

    frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = sample_rate
    frame.pts = 0
    source.push(frame)
    source.push(None)
    out = []
    while True:
        try:
            out.append(graph.pull().to_ndarray().reshape(-1))
        except (av.BlockingIOError, av.EOFError):
            break
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)
