"""What the engines report as they work, for whoever listens (the server's metrics).

Engines call plain callbacks with these records; they import nothing to report, and nothing here
knows about Prometheus or HTTP. The runtime connects listeners (`Runtime.observe`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class ModelEvent:
    """A model was loaded into memory, failed to load, or was unloaded after its idle TTL."""

    action: Literal["load", "load_failed", "unload"]
    model: str
    kind: str
    seconds: float = 0.0  # how long loading took (load, load_failed)


@dataclass(frozen=True)
class AudioWork:
    """One finished piece of audio work: a transcription, or a synthesized clip."""

    engine: Literal["speech-to-text", "text-to-speech"]
    model: str  # the local model id (a voice is `voice:<name>`)
    audio_seconds: float  # audio heard (speech to text) or spoken (text to speech)
    compute_seconds: float  # time the engine spent on it, without queueing


ModelListener = Callable[[ModelEvent], None]
AudioListener = Callable[[AudioWork], None]


def notify(listeners: list[Callable[[T], None]], event: T) -> None:
    """Call every listener; a failing listener must never fail the engine's work."""
    for listener in listeners:
        try:
            listener(event)
        except Exception:
            log.exception("engine event listener failed")
