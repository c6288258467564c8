"""Speech to text as the server uses it: resolve a model, admit the request, decode, transcribe."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import BinaryIO

import numpy as np

from voxserve.audio.decode import decode_audio
from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.events import AudioListener, AudioWork, notify
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.engines.whisper import TranscribeOptions, TranscriptionRun, WhisperEngine
from voxserve.transcript import Segment, Transcript


class SegmentStream:
    """Segments decoded one step at a time (a chunk, or a batch of chunks), each step on the engine's threads.

    Holds its admission slot (and with it the model lease) until exhausted or closed; closing early
    (a client that went away) stops decoding after the current window.
    """

    def __init__(
        self, run: TranscriptionRun, slot: Slot, finished: Callable[[Transcript, float], None] | None = None
    ) -> None:
        self.run = run
        self._slot = slot
        self._finished = finished
        self.compute_seconds = 0.0  # engine time so far: decoding, language detection, each window

    @property
    def transcript(self) -> Transcript:
        return self.run.transcript

    async def segments(self) -> AsyncIterator[Segment]:
        try:
            while True:
                started = time.perf_counter()
                segment = await self._slot.run(self.run.next_segment)
                self.compute_seconds += time.perf_counter() - started
                if segment is None:
                    break
                yield segment
        finally:
            self.close()
        if self._finished is not None:
            self._finished(self.run.transcript, self.compute_seconds)

    def close(self) -> None:
        self._slot.release()


class SpeechToText:
    def __init__(self, registry: ModelRegistry, gate: EngineGate, max_audio_seconds: float | None = None) -> None:
        self.registry = registry
        self.gate = gate
        self.listeners: list[AudioListener] = []  # told of each finished transcription (the server's metrics)
        # Decoding stops (InvalidRequest) past this much audio, whatever the upload's compression.
        self.max_audio_seconds = max_audio_seconds

    def _report(self, spec: ModelSpec, transcript: Transcript, compute_seconds: float) -> None:
        notify(self.listeners, AudioWork("speech-to-text", spec.id, transcript.duration, compute_seconds))

    def resolve(self, model: str) -> ModelSpec:
        return self.registry.resolve(model, kind="stt")

    def _start(
        self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions, lease: contextlib.ExitStack
    ) -> tuple[TranscriptionRun, float]:
        """The run, and the seconds spent starting it (decoding, language detection), loading excepted."""
        engine: WhisperEngine = lease.enter_context(self.registry.lease(spec))
        started = time.perf_counter()
        engine.check(options)
        audio = decode_audio(source, max_seconds=self.max_audio_seconds)
        return engine.start(audio, options), time.perf_counter() - started

    async def transcribe(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> Transcript:
        """The whole transcript, decoded one step at a time: cancelling the caller (a client that left)
        frees the slot at once and stops the decoding after the step in progress."""
        stream = await self._open(spec, source, options)
        async for _ in stream.segments():
            pass
        return stream.transcript

    def _start_samples(
        self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions, lease: contextlib.ExitStack
    ) -> TranscriptionRun:
        engine: WhisperEngine = lease.enter_context(self.registry.lease(spec))
        return engine.start(audio, options)

    async def transcribe_samples(self, spec: ModelSpec, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 samples already in memory (a realtime session's buffer).

        Decoded one step at a time (language detection, then a chunk or a batch of chunks per step):
        cancelling the caller (a session that ended) frees the slot and stops after the step in progress.
        """
        async with self.gate.slot() as slot:
            started = time.perf_counter()
            run = await slot.run(self._start_samples, spec, audio, options, slot.leases)
            compute = time.perf_counter() - started
            while True:
                started = time.perf_counter()
                segment = await slot.run(run.next_segment)
                compute += time.perf_counter() - started
                if segment is None:
                    break
        self._report(spec, run.transcript, compute)
        return run.transcript

    async def open_stream(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> SegmentStream:
        """Admit, decode and detect the language now, so every error before the first segment is an
        ordinary error response rather than a failure inside an event stream. The first chunk of long
        audio is planned short (`whisper_stream_first_chunk_seconds`), so the first delta comes early."""
        return await self._open(spec, source, replace(options, streamed=True))

    async def _open(self, spec: ModelSpec, source: BinaryIO, options: TranscribeOptions) -> SegmentStream:
        slot = await self.gate.acquire()
        with slot.released_on_error():
            run, seconds = await slot.run(self._start, spec, source, options, slot.leases)
        stream = SegmentStream(run, slot, lambda transcript, seconds: self._report(spec, transcript, seconds))
        stream.compute_seconds = seconds
        return stream
