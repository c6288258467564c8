"""Streaming noise suppression with RNNoise (Xiph's recurrent denoiser), as shipped in `pyrnnoise`.

RNNoise works on 10 ms frames at 48 kHz: audio at 16 kHz is lifted to 48 kHz, denoised frame by frame
with state carried across pieces, and brought back to 16 kHz. `pyrnnoise` is installed without its
dependencies (its file-processing front end pulls in plotting libraries): only its ctypes binding of
the C library is loaded here, straight from the installed file, so its package `__init__` never runs.

RNNoise alone costs clean speech accuracy (whisper-base, 12 dev-speech clips: +1.5 WER points) and its
effect on noisy speech varies with the noise (benchmarks/realtime.py). So by default the denoised audio
is mixed with the input by how noisy the input sounds: `SnrEstimate` rates the noise band by band over
the last seconds, and the mix goes from all input (clear speech) to all denoised (noisy) across
`NoiseMix`'s range (benchmarks/realtime.py measures it on clean speech and white noise at 20 and 10 dB).
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
from collections import deque
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from voxserve.audio.resample import StreamResampler

RNNOISE_RATE = 48000


class DenoiseUnavailable(RuntimeError):
    """The RNNoise library is not installed."""


@cache
def _binding() -> ModuleType:
    spec = importlib.util.find_spec("pyrnnoise")
    if spec is None or not spec.submodule_search_locations:
        raise DenoiseUnavailable("noise reduction needs the `pyrnnoise` package (installed by `make`)")
    path = Path(next(iter(spec.submodule_search_locations))) / "rnnoise.py"
    module_spec = importlib.util.spec_from_file_location("voxserve_rnnoise_binding", path)
    if module_spec is None or module_spec.loader is None:
        raise DenoiseUnavailable(f"cannot load the RNNoise binding from {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def denoise_available() -> bool:
    try:
        _binding()
    except (DenoiseUnavailable, OSError):
        return False
    return True


@dataclass(frozen=True)
class NoiseMix:
    """How much of the denoised audio is used, by the input's estimated SNR (dB): all of it at or below
    `full_at`, none at or above `none_at`, linear between. `None` (adaptive off): always all of it."""

    # Set so that white noise at 10 and 20 dB SNR gets the mix the level-percentile estimate of pass 3
    # gave it (its measured gains there), on the 24 English dev-speech clips of <= 10 s: this estimate
    # reads medians of 17.2 and 23.3 dB there, where that one read 16.8 and 25.8 (thresholds 14 / 22).
    full_at: float = 15.0
    none_at: float = 21.0

    def wet(self, snr_db: float) -> float:
        return float(np.clip((self.none_at - snr_db) / (self.none_at - self.full_at), 0.0, 1.0))


ADAPTIVE_MIX = NoiseMix()


class SnrEstimate:
    """Speech-to-noise ratio of a stream as it hurts speech recognition: the mean over `BANDS`
    frequency bands (200 Hz to 6.4 kHz, log-spaced) of each band's SNR, clipped to 0-30 dB (as the
    speech intelligibility index clips band SNRs), over the last `seconds` of 32 ms frames. A band's
    SNR is its 90th percentile level (speech) over its 10th (the noise floor between words).

    Broadband noise lowers every band; a steady hum lowers one or two, and is rated nearly clean (it
    does not hurt Whisper, and denoising costs clean speech words). A plain level percentile cannot
    tell the two apart: it rated a dev-speech clip's hum like white noise at 10 dB SNR. Bands that carry
    nothing at all (digital silence, or above a telephone band) are left out.
    """

    BANDS = 16
    FRAME_16K = 512
    CLIP_DB = 30.0
    SILENT_DB = -90.0  # a band this quiet even in its loud frames carries neither speech nor noise

    def __init__(self, rate: int, seconds: float = 10.0, min_seconds: float = 1.0) -> None:
        self._frame = self.FRAME_16K * rate // 16000
        per_second = rate / self._frame
        self._levels: deque[np.ndarray] = deque(maxlen=int(seconds * per_second))
        self._min_frames = int(min_seconds * per_second)
        self._pending = np.zeros(0, dtype=np.float32)
        self._window = np.hanning(self._frame)
        edges = np.geomspace(200.0, 6400.0, self.BANDS + 1) * self._frame / rate
        self._bands = [(int(lo), max(int(lo) + 1, int(hi))) for lo, hi in itertools.pairwise(edges)]

    def push(self, samples: np.ndarray) -> float | None:
        """The estimate after these samples, or None while too little was heard."""
        data = np.concatenate([self._pending, samples])
        whole = len(data) // self._frame * self._frame
        self._pending = data[whole:]
        if whole:
            frames = data[:whole].reshape(-1, self._frame).astype(np.float64) * self._window
            power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
            bands = np.stack([power[:, lo:hi].sum(axis=1) for lo, hi in self._bands], axis=1)
            self._levels.extend(10 * np.log10(bands + 1e-10))
        if len(self._levels) < self._min_frames:
            return None
        quiet, loud = np.percentile(np.stack(self._levels), [10, 90], axis=0)
        carried = loud > self.SILENT_DB
        if not carried.any():
            return self.CLIP_DB
        return float(np.mean(np.clip(loud[carried] - quiet[carried], 0.0, self.CLIP_DB)))


class StreamingDenoiser:
    """16 kHz float32 in, the same audio denoised out (carried across pieces; the output lines up with
    the input, 20 ms behind it until `flush`).

    With a `mix` (the default), the output is the denoised audio mixed with the input (delayed to line
    up) by the input's estimated SNR, the mix moving smoothly within each piece.
    """

    # The denoised stream lags the input by this many samples at 16 kHz (RNNoise's frame and the two
    # resamplers), measured by cross-correlation on dev-speech: the input is delayed as much to mix.
    LAG_16K = 320

    def __init__(self, rate: int = 16000, mix: NoiseMix | None = ADAPTIVE_MIX) -> None:
        binding = _binding()
        self._mix = mix
        self._snr = SnrEstimate(rate)
        self._dry = np.zeros(self.LAG_16K * rate // 16000, dtype=np.float32)
        # Input passes as it is until a second has been heard: on clear speech, denoising costs words.
        self._wet = 0.0
        self.snr_db: float | None = None
        self._lib: Any = binding.lib
        self._frame = int(binding.FRAME_SIZE)
        self._state = binding.create()
        self._up = StreamResampler(rate, RNNOISE_RATE)
        self._down = StreamResampler(RNNOISE_RATE, rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._work = np.zeros(self._frame, dtype=np.float32)
        self._ptr = self._work.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        self._owed = 0  # output samples owed before the last input is out (the input held inside)
        # Output samples still to drop: at first the lag's silence, so the output lines up with the input
        # (Whisper reads the same audio 20 ms later differently: 3 words in 411 on dev-speech); later,
        # the output of the silence a flush fed in.
        self._discard = len(self._dry)

    def push(self, samples: np.ndarray) -> np.ndarray:
        out = self._process(samples, estimate=True)
        if self._discard:
            dropped = min(self._discard, len(out))
            out, self._discard = out[dropped:], self._discard - dropped
        self._owed += len(samples) - len(out)
        return out

    def flush(self) -> np.ndarray:
        """The input still inside the denoiser (its lag), pushed out with silence: a commit must not lose
        the end of the speech. The silence's own output is dropped as it comes, so the stream stays in step."""
        owed, out, fed = self._owed, np.zeros(0, dtype=np.float32), 0
        step = max(1, self.LAG_16K)
        while len(out) < owed and fed < 20 * owed + 10 * step:
            out = np.concatenate([out, self._process(np.zeros(step, dtype=np.float32), estimate=False)])
            fed += step
        real = out[:owed]
        # The silence fed comes out one for one: what has not come out yet is dropped from later pushes.
        self._discard += fed - (len(out) - len(real))
        self._owed -= len(real)
        return real

    def _process(self, samples: np.ndarray, estimate: bool) -> np.ndarray:
        wet = self._denoise(samples)
        if self._mix is None:
            return wet
        self._dry = np.concatenate([self._dry, samples.astype(np.float32, copy=False)])
        dry, self._dry = self._dry[: len(wet)], self._dry[len(wet) :]
        snr = self._snr.push(samples) if estimate else None
        if snr is not None:
            self.snr_db = snr
        target = self._wet if snr is None else self._mix.wet(snr)
        if not len(wet):
            self._wet = target
            return wet
        ramp = np.linspace(self._wet, target, len(wet), dtype=np.float32)
        self._wet = target
        return ramp * wet + (1.0 - ramp) * dry

    def _denoise(self, samples: np.ndarray) -> np.ndarray:
        lifted = np.concatenate([self._pending, self._up.push(samples)])
        whole = len(lifted) // self._frame * self._frame
        self._pending = lifted[whole:]
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        out = np.empty(whole, dtype=np.float32)
        for start in range(0, whole, self._frame):
            # RNNoise expects samples on the 16-bit scale, not -1..1.
            self._work[:] = lifted[start : start + self._frame] * 32768.0
            self._lib.rnnoise_process_frame(self._state, self._ptr, self._ptr)
            out[start : start + self._frame] = self._work
        return self._down.push(np.clip(out / 32768.0, -1.0, 1.0))

    def close(self) -> None:
        if self._state is not None:
            _binding().destroy(self._state)
            self._state = None

    def __del__(self) -> None:
        self.close()
