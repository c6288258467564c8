"""Which glibc malloc knobs `process_memory.tune` sets, without touching this process's own malloc."""

from __future__ import annotations

from typing import Any

import pytest

from voxserve import process_memory


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def _tune(monkeypatch: pytest.MonkeyPatch, settings: Any = None, env: dict[str, str] | None = None) -> list[Any]:
    libc = _Libc()
    monkeypatch.setattr(process_memory, "_glibc", lambda: libc)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    assert process_memory.tune(settings)
    return libc.calls


def test_the_default_caps_the_heaps_and_leaves_the_thresholds_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    # Setting either threshold would stop glibc from raising its mmap threshold, and every large
    # CTranslate2 buffer would be mmapped and zero-filled again on each use (benchmarks/stt_malloc.py).
    assert _tune(monkeypatch) == [(process_memory._M_ARENA_MAX, 2)]


def test_explicit_thresholds_are_applied_and_the_operators_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = process_memory.MallocSettings(mmap_threshold=4 << 20, trim_threshold=128 << 10, arena_max=2)
    calls = _tune(monkeypatch, settings, {"MALLOC_ARENA_MAX": "4"})
    assert calls == [(process_memory._M_MMAP_THRESHOLD, 4 << 20), (process_memory._M_TRIM_THRESHOLD, 128 << 10)]
