"""How the process's C heap (glibc malloc) gives memory back: one process holds Whisper, Piper and llama.cpp.

Measured with every default model loaded (benchmarks/chat.py), the peak RSS grew by ~300 MiB over a run
of spoken chats although no model grew: the buffers of each request (decoded audio, mel features,
onnxruntime and CTranslate2 intermediates) are freed, but glibc keeps them. Its mmap threshold rises
to 32 MiB after the first large free, so later large buffers land in the heaps, and a heap can give
back only its free top; with a dozen threads it also keeps one heap per thread. Capping the heaps at
two, before the engines start their threads, is what is kept; `release()` (after each model load and
unload) returns what is free in the middle of the heaps too.

The thresholds are left to glibc. A fixed 4 MiB mmap threshold with a 128 KiB trim threshold (the
setting before) kept the peak ~45 MiB lower (1,043-1,047 against 1,090 MiB, every default model loaded)
but mmapped and zero-filled every large CTranslate2 buffer again on each use: 2.7x the page faults of
glibc's defaults on Whisper base's English clips and ~11% of their time (benchmarks/stt_malloc.py).
Once glibc has raised its own threshold, llama.cpp's per-token vocabulary array (1.8 MiB for Qwen)
stays in the heap too, so chat's tokens/s is not taxed either.

Only glibc has these knobs; elsewhere (musl, macOS) this does nothing. An operator's own
MALLOC_*_ environment variables win: glibc has read them already and they are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass
from functools import cache

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


@dataclass(frozen=True)
class MallocSettings:
    """None leaves a knob to glibc. Setting either threshold also stops glibc from raising them itself."""

    mmap_threshold: int | None = None
    trim_threshold: int | None = None
    arena_max: int | None = 2


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def tune(settings: MallocSettings | None = None) -> bool:
    """Apply `settings` to glibc malloc; False where there is no glibc. Call it before the engines load."""
    libc = _glibc()
    if libc is None:
        return False
    settings = settings or MallocSettings()
    for env, param, value in (
        ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, settings.mmap_threshold),
        ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, settings.trim_threshold),
        ("MALLOC_ARENA_MAX", _M_ARENA_MAX, settings.arena_max),
    ):
        if value is not None and env not in os.environ and not libc.mallopt(param, value):
            log.warning("mallopt(%d, %d) failed", param, value)
    return True


def release() -> None:
    """Give the free pages of every malloc heap back to the system (a few milliseconds)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
