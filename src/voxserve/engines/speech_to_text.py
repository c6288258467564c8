"""Speech to text as the server uses it: resolve a model, admit the request, decode, transcribe."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import BinaryIO

import numpy as np

from voxserve.audio.decode import decode_audio
from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.engines.whisper import TranscribeOptions, TranscriptionRun, WhisperEngine
from voxserve.transcript import Segment, Transcript


class SegmentStream:
    """Segments decoded one step at a time (a chunk, or a batch of chunks), each step on the engine's threads.

    Holds its admission slot (and with it the model lease) until exhausted or closed; closing early
    (a client that went away) stops decoding after the current window.
    """

    def __init__(self, run: TranscriptionRun, slot: Slot) -> None:
        self.run = run
        self._slot = slot

    @property
    def transcript(self) -> Transcript:
        return self.run.transcript

    async def segments(self) -> AsyncIterator[Segment]:
        try:
            while (segment := await self._slot.run(self.run.next_segment)) is not None:
                yield segment
        finally:
            self.close()

    def close(self) -> None:
        self._slot.release()


class SpeechToText:
    def __init__(self, registry: ModelRegistry, gate: EngineGate) -> None:
        self.registry = registry
        self.gate = gate

    def resolve(self, model: str) -> ModelSpec:
        return self.registry.resolve(model, kind="stt")

    def _start(
        self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions, lease: contextlib.ExitStack
    ) -> TranscriptionRun:
        engine: WhisperEngine = lease.enter_context(self.registry.lease(spec))
        engine.check(options)
        audio = decode_audio(source)
        return engine.start(audio, options)

    def _transcribe(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> Transcript:
        with contextlib.ExitStack() as lease:
            return self._start(spec, source, options, lease).run_to_end()

    async def transcribe(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> Transcript:
        async with self.gate.slot() as slot:
            return await slot.run(self._transcribe, spec, source, options)

    def _transcribe_samples(self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        with self.registry.lease(spec) as engine:
            return engine.start(audio, options).run_to_end()

    async def transcribe_samples(self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 samples already in memory (a realtime session's buffer)."""
        async with self.gate.slot() as slot:
            return await slot.run(self._transcribe_samples, spec, audio, options)

    async def open_stream(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> SegmentStream:
        """Admit, decode and detect the language now, so every error before the first segment is an
        ordinary error response rather than a failure inside an event stream."""
        slot = await self.gate.acquire()
        with slot.released_on_error():
            run = await slot.run(self._start, spec, source, options, slot.leases)
        return SegmentStream(run, slot)
