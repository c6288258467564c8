"""Text to speech as the server uses it: resolve model and voice, admit, synthesize, encode, stream."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import numpy as np

from voxserve.audio.encode import AudioEncoder
from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.events import AudioListener, AudioWork, notify
from voxserve.engines.piper_tts import PiperEngine
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.errors import InvalidRequest
from voxserve.transcript import audio_tokens

# A clip with no speakable text (only punctuation or emoji) still decodes: 100 ms of silence.
_EMPTY_CLIP_SECONDS = 0.1


@dataclass(frozen=True)
class VoiceEntry:
    name: str
    spec: ModelSpec
    sample_rate: int


class VoiceBook:
    """Local voices by name, and the table that maps OpenAI's voice names onto them."""

    def __init__(self, voices: dict[str, VoiceEntry], mapping: dict[str, str]) -> None:
        self.voices = voices
        self.mapping = mapping

    def resolve(self, name: str) -> VoiceEntry:
        local = self.mapping.get(name, name)
        entry = self.voices.get(local)
        if entry is None:
            known = sorted(self.mapping) + sorted(self.voices)
            raise InvalidRequest(
                f"Unknown voice `{name}`. Available voices: {', '.join(known)}.",
                param="voice",
                code="invalid_value",
            )
        return entry


def input_tokens(text: str) -> int:
    """Text input in tokens: one per four characters, rounded up (documented in README)."""
    return math.ceil(len(text) / 4)


class SpeechStream:
    """Encoded audio pieces, one per synthesized sentence, each step run on the engine's threads."""

    def __init__(
        self,
        steps: Iterator[bytes],
        slot: Slot,
        encoder: AudioEncoder,
        finished: Callable[[float, float], None] | None = None,
    ) -> None:
        self._steps = steps
        self._slot = slot  # with the voice's lease
        self.encoder = encoder
        self._finished = finished  # (audio seconds, compute seconds), once the clip is complete
        self.compute_seconds = 0.0

    def _next(self) -> bytes | None:
        started = time.perf_counter()
        try:
            return next(self._steps, None)
        finally:
            self.compute_seconds += time.perf_counter() - started

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._slot.run(self._next)) is not None:
                if chunk:
                    yield chunk
        finally:
            self.close()
        if self._finished is not None:
            self._finished(self.encoder.duration, self.compute_seconds)

    @property
    def output_tokens(self) -> int:
        return audio_tokens(self.encoder.duration)

    def close(self) -> None:
        self._slot.release()


class TextToSpeech:
    def __init__(self, registry: ModelRegistry, gate: EngineGate, voices: VoiceBook) -> None:
        self.registry = registry
        self.gate = gate
        self.voices = voices
        self.listeners: list[AudioListener] = []  # told of each finished clip (the server's metrics)

    def _report(self, voice: VoiceEntry, audio_seconds: float, compute_seconds: float) -> None:
        notify(self.listeners, AudioWork("text-to-speech", voice.spec.id, audio_seconds, compute_seconds))

    def resolve_model(self, model: str) -> ModelSpec:
        return self.registry.resolve(model, kind="tts")

    @staticmethod
    def _steps(engine: PiperEngine, text: str, speed: float, encoder: AudioEncoder) -> Iterator[bytes]:
        spoken = False
        for sentence in engine.sentences(text, speed):
            spoken = True
            yield encoder.write(sentence)
        if not spoken:
            yield encoder.write(np.zeros(int(engine.sample_rate * _EMPTY_CLIP_SECONDS), dtype=np.float32))
        yield encoder.close()

    async def open_stream(self, voice: VoiceEntry, text: str, speed: float, fmt: str) -> SpeechStream:
        """Admit now (a full queue is an ordinary 429), then synthesize lazily as the client reads."""
        slot = await self.gate.acquire()
        with slot.released_on_error():
            engine: PiperEngine = await slot.run(slot.leases.enter_context, self.registry.lease(voice.spec))
            encoder = AudioEncoder(fmt, engine.sample_rate)
        steps = self._steps(engine, text, speed, encoder)
        return SpeechStream(steps, slot, encoder, lambda audio, compute: self._report(voice, audio, compute))

    async def synthesize(self, voice: VoiceEntry, text: str, speed: float, fmt: str) -> tuple[bytes, float]:
        """The whole clip at once (wav and flac then carry their true length), and its seconds."""
        async with self.gate.slot() as slot:
            return await slot.run(self._synthesize, voice, text, speed, fmt)

    def _synthesize(self, voice: VoiceEntry, text: str, speed: float, fmt: str) -> tuple[bytes, float]:
        with self.registry.lease(voice.spec) as engine:
            started = time.perf_counter()  # synthesis time, not the voice's loading
            encoder = AudioEncoder(fmt, engine.sample_rate, seekable=True)
            audio = b"".join(self._steps(engine, text, speed, encoder))
        self._report(voice, encoder.duration, time.perf_counter() - started)
        return audio, encoder.duration
