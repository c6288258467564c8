"""Streaming noise suppression with RNNoise (Xiph's recurrent denoiser), as shipped in `pyrnnoise`.

RNNoise works on 10 ms frames at 48 kHz: audio at 16 kHz is lifted to 48 kHz, denoised frame by frame
with state carried across pieces, and brought back to 16 kHz. `pyrnnoise` is installed without its
dependencies (its file-processing front end pulls in plotting libraries): only its ctypes binding of
the C library is loaded here, straight from the installed file, so its package `__init__` never runs.
"""

from __future__ import annotations

import ctypes
import importlib.util
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


class StreamingDenoiser:
    """16 kHz float32 in, the same audio denoised out (about 10 ms later, carried across pieces)."""

    def __init__(self, rate: int = 16000) -> None:
        binding = _binding()
        self._lib: Any = binding.lib
        self._frame = int(binding.FRAME_SIZE)
        self._state = binding.create()
        self._up = StreamResampler(rate, RNNOISE_RATE)
        self._down = StreamResampler(RNNOISE_RATE, rate)
        self._pending = np.zeros(0, dtype=np.float32)
        self._work = np.zeros(self._frame, dtype=np.float32)
        self._ptr = self._work.ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    def push(self, samples: np.ndarray) -> np.ndarray:
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
