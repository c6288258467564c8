"""Helpers for the realtime tests: dev-speech clips as the Realtime API's audio, streaming them into an
SDK connection, and reading every server event back validated strictly against the SDK's own types."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

import av
import numpy as np
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.beta.realtime import TranscriptionSession
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from voxserve.audio.g711 import encode_g711

DEV_SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dev-speech"
GA_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
BETA_EVENTS: TypeAdapter[Any] = TypeAdapter(BetaServerEvent)


@cache
def manifest() -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in (DEV_SPEECH / "manifest.jsonl").read_text().splitlines() if line]
    return {row["id"]: row for row in rows}


def decode_pcm(source: str | io.BytesIO, rate: int = 24000) -> np.ndarray:
    """Any audio file (a path or its bytes) as mono int16 at `rate`."""
    with av.open(source) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        pieces = []
        for frame in container.decode(audio=0):
            frame.pts = None
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.int16)


@cache
def clip_pcm(clip_id: str, rate: int = 24000) -> np.ndarray:
    """A dev-speech clip as mono int16 at `rate` (24 kHz is the Realtime API's PCM16)."""
    return decode_pcm(str(DEV_SPEECH / manifest()[clip_id]["path"]), rate)


def clip_text(clip_id: str) -> str:
    return str(manifest()[clip_id]["text"])


def silence(seconds: float, rate: int = 24000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.int16)


def ulaw(pcm24k: np.ndarray) -> bytes:
    """24 kHz PCM to G.711 µ-law at 8 kHz."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
    frame = av.AudioFrame.from_ndarray(pcm24k.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 24000
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return encode_g711(np.concatenate(out), "ulaw")


def validate(event: dict[str, Any], beta: bool = False) -> None:
    """Strict validation: the SDK itself builds events without checking them."""
    if beta and event["type"] == "transcription_session.created":
        # In the beta spec but not in the beta SDK's union: its session is the updated event's.
        TranscriptionSession.model_validate(event["session"], strict=True)
        assert isinstance(event["event_id"], str)
        return
    (BETA_EVENTS if beta else GA_EVENTS).validate_python(event, strict=True)


class EventReader:
    """Collects a connection's events on a thread, validating each, with the time it arrived."""

    def __init__(self, conn: Any, beta: bool = False) -> None:
        self.conn = conn
        self.beta = beta
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                event = json.loads(self.conn.recv_bytes())
                try:
                    validate(event, self.beta)
                except Exception as exc:
                    self.errors.append(exc)
                with self._cond:
                    self.events.append((time.monotonic(), event))
                    self._cond.notify_all()
        except (ConnectionClosed, OSError):
            pass
        except Exception as exc:
            self.errors.append(exc)
        with self._cond:
            self._cond.notify_all()

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == type_]

    def wait_for(self, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """The first event (in arrival order) matching `predicate`, waiting for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, event in self.events:
                    if predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self._thread.is_alive() and not any(predicate(e) for _, e in self.events)):
                    raise AssertionError(f"no matching event; got {[e['type'] for _, e in self.events]}")
                self._cond.wait(remaining)

    def wait_type(self, type_: str, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.of(type_)) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    raise AssertionError(f"{count} x {type_} not seen; got {[e['type'] for _, e in self.events]}")
                self._cond.wait(remaining)
            return self.of(type_)[:count]


def stream(conn: Any, audio: bytes | np.ndarray, *, chunk_ms: int = 100, speed: float = 1.0, rate: int = 24000) -> None:
    """Append `audio` in `chunk_ms` pieces, pausing so it arrives at `speed` times real time."""
    data = audio.tobytes() if isinstance(audio, np.ndarray) else audio
    bytes_per_ms = rate * 2 // 1000 if isinstance(audio, np.ndarray) else 8
    step = chunk_ms * bytes_per_ms
    started = time.monotonic()
    for index, offset in enumerate(range(0, len(data), step)):
        conn.input_audio_buffer.append(audio=base64.b64encode(data[offset : offset + step]).decode())
        due = started + (index + 1) * chunk_ms / 1000 / speed
        time.sleep(max(0.0, due - time.monotonic()))
