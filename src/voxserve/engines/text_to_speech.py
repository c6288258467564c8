"""Text to speech as the server uses it: resolve model and voice, admit, synthesize, encode, stream."""

from __future__ import annotations

import asyncio
import math
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import numpy as np
import regex

from voxserve.audio.encode import AudioEncoder
from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.events import AudioListener, AudioWork, notify
from voxserve.engines.piper_tts import PiperEngine
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.errors import InvalidRequest, Overloaded
from voxserve.transcript import audio_tokens

# A clip with no speakable text (only punctuation or emoji) still decodes: 100 ms of silence.
_EMPTY_CLIP_SECONDS = 0.1
# How often speech for work admitted elsewhere asks again for a place in a full queue.
_REQUEUE_INTERVAL = 0.05

# An emoji with what binds it into one picture: skin tones, variation selectors, keycaps, flag tags,
# and zero-width joiners between pictographs (a joiner elsewhere belongs to the script around it).
_EMOJI = regex.compile(
    r"[\u200d\ufe0e\ufe0f]*(?:[\p{Extended_Pictographic}\p{Regional_Indicator}\p{Emoji_Modifier}"
    r"\u20e3\U000E0020-\U000E007F][\u200d\ufe0e\ufe0f]*)+"
)
_KEEP_CONTROLS = frozenset("\t\n\r")


def speakable_text(text: str) -> str:
    """The text the voice is given: what a reader would say aloud, nothing that breaks the phonemizer.

    Emoji are left unsaid (espeak-ng would read 🎉 as "party popper"), as a screen reader's speech
    mode or a person reading a message aloud would; control characters (a NUL ends espeak-ng's C
    string and raised mid-response), surrogates, private-use and unassigned code points become spaces;
    Piper's `[[ phonemes ]]` syntax is not applied, because an OpenAI client sends text, not phonemes.
    """
    text = _EMOJI.sub(" ", text)
    text = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in _KEEP_CONTROLS else ch for ch in text
    )
    return text.replace("[[", "[ [").replace("]]", "] ]")


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
    def _speak(engine: PiperEngine, sentences: list[list[str]], speed: float, encoder: AudioEncoder) -> Iterator[bytes]:
        spoken = False
        for phonemes in sentences:
            audio = engine.speak(phonemes, speed)
            if audio.size:
                spoken = True
                yield encoder.write(audio)
        if not spoken:
            yield encoder.write(np.zeros(int(engine.sample_rate * _EMPTY_CLIP_SECONDS), dtype=np.float32))
        yield encoder.close()

    @staticmethod
    def _steps(engine: PiperEngine, text: str, speed: float, encoder: AudioEncoder) -> Iterator[bytes]:
        """Every encoded piece of `text`, in-process and unadmitted (what the benchmarks compare with)."""
        yield from TextToSpeech._speak(engine, engine.phonemize(speakable_text(text)), speed, encoder)

    async def _admit(self, shed: bool) -> Slot:
        while True:
            try:
                return await self.gate.acquire()
            except Overloaded:
                if shed:
                    raise
            await asyncio.sleep(_REQUEUE_INTERVAL)

    async def open_stream(
        self, voice: VoiceEntry, text: str, speed: float, fmt: str, *, seekable: bool = False, shed: bool = False
    ) -> SpeechStream:
        """Admit and read the text now (text the phonemizer cannot take is an ordinary 400, before any
        byte is sent), then synthesize lazily as the client reads.

        With `shed`, a full queue is Overloaded (a speech request's 429). Without it the speech waits
        for a place: it belongs to work already admitted elsewhere (a chat answer streaming its audio,
        a realtime turn), which must not fail half-way because other clients filled the queue."""
        slot = await self._admit(shed)
        with slot.released_on_error():
            engine: PiperEngine = await slot.run(slot.leases.enter_context, self.registry.lease(voice.spec))
            sentences = await slot.run(engine.phonemize, speakable_text(text))
            encoder = AudioEncoder(fmt, engine.sample_rate, seekable=seekable)
        steps = self._speak(engine, sentences, speed, encoder)
        return SpeechStream(steps, slot, encoder, lambda audio, compute: self._report(voice, audio, compute))

    async def synthesize(
        self, voice: VoiceEntry, text: str, speed: float, fmt: str, *, shed: bool = False
    ) -> tuple[bytes, float]:
        """The whole clip at once (wav and flac then carry their true length), and its seconds.

        Synthesized a sentence per step, so cancelling the caller (a client that left) stops it there.
        `shed` as for `open_stream`."""
        stream = await self.open_stream(voice, text, speed, fmt, seekable=True, shed=shed)
        pieces = [chunk async for chunk in stream.chunks()]
        return b"".join(pieces), stream.encoder.duration
