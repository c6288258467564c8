"""One registry for every model: ids and aliases, load on first use, one shared instance per model,
reference counts, and unloading after an idle TTL."""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from voxserve.engines.events import ModelEvent, ModelListener, notify
from voxserve.errors import ModelNotFound, ModelUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: str  # "stt", "tts", "voice", "chat", "realtime"
    loader: Callable[[], Any] = field(compare=False)
    owned_by: str = "voxserve"
    created: int = 0
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class _Entry:
    spec: ModelSpec
    lock: threading.Lock = field(default_factory=threading.Lock)
    instance: Any = None
    users: int = 0
    last_used: float = 0.0


class ModelRegistry:
    def __init__(self, ttl: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl  # seconds idle before unloading; negative keeps models loaded
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        self._guard = threading.Lock()
        self.listeners: list[ModelListener] = []  # told of loads and unloads (the server's metrics)

    def add(self, spec: ModelSpec) -> None:
        self._entries[spec.id] = _Entry(spec)

    def alias(self, name: str, target: str) -> None:
        if target not in self._entries:
            raise KeyError(f"alias {name!r} points to unknown model {target!r}")
        self._aliases[name] = target

    def alias_pattern(self, pattern: str, target: str) -> None:
        """Names that match `pattern` as a whole resolve to `target`, when no id or alias is theirs.

        Patterns are tried in the order they were added; with a `kind` asked for, only the patterns of
        that kind's models count, so one name may mean a different model to each kind."""
        if target not in self._entries:
            raise KeyError(f"alias pattern {pattern!r} points to unknown model {target!r}")
        self._patterns.append((re.compile(pattern), target))

    def resolve(self, name: str, kind: str | None = None, *, param: str | None = "model") -> ModelSpec:
        entry = self._entries.get(self._aliases.get(name, name))
        if entry is None or (kind is not None and entry.spec.kind != kind):
            entry = self._by_pattern(name, kind)
        if entry is None:
            raise ModelNotFound(name, param=param)
        return entry.spec

    def _by_pattern(self, name: str, kind: str | None) -> _Entry | None:
        for pattern, target in self._patterns:
            entry = self._entries[target]
            if (kind is None or entry.spec.kind == kind) and pattern.fullmatch(name):
                return entry
        return None

    def patterns(self) -> list[tuple[str, ModelSpec]]:
        """The alias patterns (regular expressions), with the model each names."""
        return [(pattern.pattern, self._entries[target].spec) for pattern, target in self._patterns]

    def listing(self) -> list[tuple[str, ModelSpec]]:
        """Every id a client may use, aliases included, with the model it names."""
        rows = [(spec_id, e.spec) for spec_id, e in self._entries.items()]
        rows += [(alias, self._entries[target].spec) for alias, target in self._aliases.items()]
        return rows

    def is_loaded(self, model_id: str) -> bool:
        return self._entries[model_id].instance is not None

    def loaded_ids(self) -> list[str]:
        return [model_id for model_id, entry in self._entries.items() if entry.instance is not None]

    @contextlib.contextmanager
    def lease(self, spec: ModelSpec) -> Iterator[Any]:
        """Hold the loaded instance of `spec` for the duration of the block. Blocking: call off the loop."""
        entry = self._entries[spec.id]
        with entry.lock:
            if entry.instance is None:
                started = time.perf_counter()
                try:
                    entry.instance = spec.loader()
                except Exception as exc:
                    log.exception("loading model %s failed", spec.id)
                    seconds = time.perf_counter() - started
                    notify(self.listeners, ModelEvent("load_failed", spec.id, spec.kind, seconds))
                    raise ModelUnavailable(f"The model `{spec.id}` could not be loaded: {exc}") from exc
                seconds = time.perf_counter() - started
                log.info("loaded model %s in %.2f s", spec.id, seconds)
                notify(self.listeners, ModelEvent("load", spec.id, spec.kind, seconds))
            with self._guard:
                entry.users += 1
            instance = entry.instance
        try:
            yield instance
        finally:
            with self._guard:
                entry.users -= 1
                entry.last_used = self._clock()

    def preload(self, model_id: str) -> None:
        with self.lease(self.resolve(model_id)):
            pass

    def sweep(self) -> list[str]:
        """Unload models idle for longer than the TTL; return their ids."""
        if self.ttl < 0:
            return []
        now = self._clock()
        unloaded = []
        for entry in self._entries.values():
            # Skip a model that is loading right now rather than wait for it.
            if entry.instance is None or not entry.lock.acquire(blocking=False):
                continue
            try:
                with self._guard:
                    idle = entry.users == 0 and now - entry.last_used >= self.ttl
                    if idle:
                        entry.instance = None
                if idle:
                    unloaded.append(entry.spec.id)
            finally:
                entry.lock.release()
        for model_id in unloaded:
            notify(self.listeners, ModelEvent("unload", model_id, self._entries[model_id].spec.kind))
        if unloaded:
            gc.collect()
            log.info("unloaded idle models: %s", ", ".join(unloaded))
        return unloaded
