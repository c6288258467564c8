"""An input's VAD chunks decoded in batches: one beam search for several windows (on the CPU: `half_batches`).

`ChunkBatches` keeps the queue of windows to decode (planned chunks, and the rest of a chunk after
Whisper stopped early or left part of it unsaid), takes them a batch at a time, checks what a text-only
decode covered (`chunk_coverage`), aligns words once a chunk's text is final, and hands segments out in
the input's order. How one window is prompted, decoded, trusted and split into segments is the
subclass's (`whisper.TranscriptionRun`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from voxserve.audio.decode import STT_SAMPLE_RATE
from voxserve.engines.chunk_coverage import uncovered_starts, worth_aligning
from voxserve.engines.decode_fallback import Decoded
from voxserve.engines.half_batches import HalfPair, encode_windows
from voxserve.engines.speech_chunks import Chunk
from voxserve.transcript import Segment, Transcript, Word

if TYPE_CHECKING:
    from voxserve.engines.whisper import DecoderSettings, TranscribeOptions

WINDOW_FRAMES = 3000  # one 30 s Whisper window


def window_frames(content_frames: int, settings: DecoderSettings) -> int:
    """Frames the encoder sees for a window holding `content_frames` of audio.

    Whisper's encoder costs grow faster than linearly with its input (its self-attention runs in
    float), and a 4 s question padded to 30 s spends most of its time on the padding; whisper.cpp's
    `audio_ctx` makes the same trade.
    """
    if not settings.trim_padding:
        return WINDOW_FRAMES
    frames = -(-(content_frames + settings.padding_kept_frames) // 100) * 100
    return min(WINDOW_FRAMES, max(frames, settings.min_window_frames))


class Batch:
    """Encoded windows for some chunks: features padded to one length, and the encoder's output."""

    def __init__(
        self,
        model: WhisperModel,
        features: list[np.ndarray],
        settings: DecoderSettings,
        *,
        full: bool = False,
        pair: HalfPair | None = None,
    ) -> None:
        self._model = model
        self.features = features
        self.content_frames = [f.shape[-1] for f in features]
        self.frames = WINDOW_FRAMES if full else window_frames(max(self.content_frames), settings)
        self._stacked = np.zeros((len(features), features[0].shape[0], self.frames), dtype=np.float32)
        for index, item in enumerate(features):
            self._stacked[index, :, : item.shape[-1]] = item
            if settings.pad_with_silence and item.size:
                self._stacked[index, :, item.shape[-1] :] = item.min()
        if pair is not None and len(features) >= 2:
            self.encoded = pair.encode(self._stacked)
        else:
            self.encoded = encode_windows(model, self._stacked, settings.encode_batch_size)

    @property
    def trimmed(self) -> bool:
        return self.frames < WINDOW_FRAMES

    def subset(self, indices: list[int]) -> ctranslate2.StorageView:
        if len(indices) == len(self.content_frames):
            return self.encoded
        if self.encoded.device == "cpu":
            # Only on fallback or alignment of some items: a copy of a few MB, small beside decoding.
            full = np.asarray(self.encoded)
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(full[indices]))
        return self._model.encode(self._stacked[indices])  # device memory: encoding again is simpler


@dataclass(frozen=True)
class Job:
    """A window to decode: a planned chunk, or the rest of one after Whisper stopped early."""

    chunk: Chunk
    slot: int  # the planned chunk it belongs to; segments leave in slot order
    context: tuple[int, ...] = ()  # tokens decoded before it in the same chunk
    continued: int = 0  # how many times this chunk has been continued


class ChunkBatches(ABC):
    """The decoding of one input's chunks, a step (the first chunk, or one batch of chunks) at a time.

    `next_segment` returns the next segment, decoding one step when none is waiting; a caller streaming
    results pulls one step at a time off the event loop, and one that stops pulling stops the work
    between steps.
    """

    _tokenizer: Tokenizer
    _text_only: bool
    _pair: HalfPair | None = None  # batches of two or more windows run as two halves at once (HalfPair)

    def __init__(
        self,
        model: WhisperModel,
        settings: DecoderSettings,
        audio: np.ndarray,
        chunks: list[Chunk],
        transcript: Transcript,
        options: TranscribeOptions,
        first: Batch | None,
        rest: Callable[[], list[Chunk]] | None,
    ) -> None:
        self.transcript = transcript
        self._model = model
        self._settings = settings
        self._audio = audio
        self._options = options
        self._jobs: deque[Job] = deque(Job(chunk, slot) for slot, chunk in enumerate(chunks))
        self._planned = len(chunks)
        self._rest = rest  # the chunks after these, planned once these are decoded
        self._first = first
        self._held: dict[int, list[tuple[Decoded, dict[str, Any]]]] = {}
        self._next_slot = 0
        self._ready: deque[Segment] = deque()
        self._last_speech = 0.0  # the word aligner's memory of where speech last ended
        self.steps = 0
        self.windows = 0
        self.coverage_checked = 0
        self.coverage_redone = 0
        self._rates: list[float] = []  # characters per second of speech of the input's chunks (chunk_coverage)

    # -- what a subclass decides for one window ---------------------------------------------------

    @abstractmethod
    def _prompt(self, job: Job) -> list[int]: ...

    @abstractmethod
    def _decode(self, batch: Batch, prompts: list[list[int]]) -> list[Decoded]: ...

    @abstractmethod
    def _redecode(
        self, batch: Batch, prompts: list[list[int]], results: list[Decoded]
    ) -> tuple[list[int], Batch | None]:
        """Decode again the windows whose results are not trusted (replacing them in `results`): which
        ones, and the batch they were decoded from."""

    @abstractmethod
    def _split(self, job: Job, result: Decoded, content_frames: int) -> tuple[list[dict[str, Any]], Job | None]: ...

    @abstractmethod
    def _silent(self, result: Decoded) -> bool: ...

    # -- stepping -----------------------------------------------------------------------------

    def next_segment(self) -> Segment | None:
        """The next segment, decoding one more step when none is waiting; None when finished."""
        while not self._ready:
            if not self._jobs:
                if self._rest is None:
                    return None
                rest, self._rest = self._rest(), None
                self._jobs.extend(Job(chunk, self._planned + i) for i, chunk in enumerate(rest))
                self._planned += len(rest)
                continue
            self._step()
        return self._ready.popleft()

    def segments(self) -> Iterator[Segment]:
        while (segment := self.next_segment()) is not None:
            yield segment

    def run_to_end(self) -> Transcript:
        for _ in self.segments():
            pass
        return self.transcript

    def _step(self) -> None:
        jobs = [self._jobs.popleft()]
        prompt = self._prompt(jobs[0])
        if self._first is None and not self._settings.condition_on_previous_text:
            # One beam search serves windows whose prompts line up (CTranslate2 needs that).
            while (
                len(jobs) < self._settings.batch_size and self._jobs and len(self._prompt(self._jobs[0])) == len(prompt)
            ):
                jobs.append(self._jobs.popleft())
        batch = self._first or Batch(
            self._model, [self._features(job.chunk) for job in jobs], self._settings, pair=self._pair
        )
        self._first = None
        self.steps += 1
        self.windows += len(jobs)
        prompts = [self._prompt(job) for job in jobs]
        results = self._decode(batch, prompts)
        redo, full = self._redecode(batch, prompts, results)
        pieces: list[list[dict[str, Any]]] = []
        continuations: list[Job] = []
        for job, result, frames in zip(jobs, results, batch.content_frames, strict=True):
            job_pieces, continuation = self._split(job, result, frames)
            pieces.append(job_pieces)
            if continuation is not None:
                continuations.append(continuation)
        kept = [i for i in range(len(jobs)) if i not in redo]  # results of this batch's own encoding
        if self._text_only and self._settings.coverage_check:
            continuations += self._uncovered(batch, kept, jobs, results, pieces)
            if full is not None:
                continuations += self._uncovered(
                    full,
                    list(range(len(redo))),
                    [jobs[i] for i in redo],
                    [results[i] for i in redo],
                    [pieces[i] for i in redo],
                )
        if self._options.word_timestamps:
            self._align(batch, kept, [pieces[i] for i in kept])
            if full is not None:
                self._align(full, list(range(len(redo))), [pieces[i] for i in redo])
        for job, result, job_pieces in zip(jobs, results, pieces, strict=True):
            self._held.setdefault(job.slot, []).extend((result, piece) for piece in job_pieces)
        self._jobs.extendleft(reversed(continuations))
        self._release()

    def _uncovered(
        self,
        batch: Batch,
        items: list[int],
        jobs: list[Job],
        results: list[Decoded],
        pieces: list[list[dict[str, Any]]],
    ) -> list[Job]:
        """The rest of each chunk whose text-only decode ended well before its audio (chunk_coverage);
        that chunk's segments are fitted into the part its text covers."""
        eot = self._tokenizer.eot
        chosen = [i for i in items if jobs[i].continued == 0 and any(t < eot for t in results[i].tokens)]
        chosen = [i for i in chosen if not self._silent(results[i])]
        rates = [self._rate(jobs[i].chunk, results[i].tokens) for i in chosen]
        self._rates += [rate for rate in rates if rate is not None]
        chosen = [i for i, check in zip(chosen, worth_aligning(rates, self._rates), strict=True) if check]
        if not chosen:
            return []
        starts = uncovered_starts(
            self._model.model,
            list(self._tokenizer.sot_sequence),
            [[t for t in results[i].tokens if t < eot] for i in chosen],
            batch.subset(chosen),
            [batch.content_frames[i] for i in chosen],
        )
        self.coverage_checked += len(chosen)
        rest = []
        for i, said in zip(chosen, starts, strict=True):
            if said is None:
                continue
            chunk = jobs[i].chunk
            scale = said / chunk.seconds
            for piece in pieces[i]:
                piece["start"] = chunk.offset + (piece["start"] - chunk.offset) * scale
                piece["end"] = chunk.offset + (piece["end"] - chunk.offset) * scale
            rest.append(Job(Chunk(chunk.start + round(said * STT_SAMPLE_RATE), chunk.end), jobs[i].slot, (), 1))
        self.coverage_redone += len(rest)
        return rest

    def _rate(self, chunk: Chunk, tokens: list[int]) -> float | None:
        if chunk.speech_seconds < 1.0:
            return None
        text = self._tokenizer.decode([t for t in tokens if t < self._tokenizer.eot])
        return len(text.strip()) / chunk.speech_seconds

    def _release(self) -> None:
        """Turn held pieces into segments, in order, for every chunk that is completely decoded."""
        while self._next_slot in self._held and (not self._jobs or self._jobs[0].slot > self._next_slot):
            for result, piece in self._held.pop(self._next_slot):
                self._emit(result, piece)
            self._next_slot += 1

    def _features(self, chunk: Chunk) -> np.ndarray:
        features = self._model.feature_extractor(self._audio[chunk.start : chunk.end])
        return features[..., :-1]  # the last frame covers the 160 samples of padding after the audio

    # -- once a chunk's text is final -------------------------------------------------------------

    def _align(self, batch: Batch, items: list[int], pieces: list[list[dict[str, Any]]]) -> None:
        """Word timestamps (and probabilities) for the decoded text; the text itself is final."""
        chosen = [(i, segments) for i, segments in zip(items, pieces, strict=True) if segments]
        if not chosen:
            return
        self._last_speech = self._model.add_word_timestamps(
            [segments for _, segments in chosen],
            self._tokenizer,
            batch.subset([i for i, _ in chosen]),
            [batch.content_frames[i] for i, _ in chosen],
            "\"'“¿([{-",
            "\"'.。,，!！?？:：”)]}、",
            last_speech_timestamp=self._last_speech,
        )

    def _emit(self, result: Decoded, piece: dict[str, Any]) -> None:
        tokens = piece["tokens"]
        text = self._tokenizer.decode(tokens)
        if not text.strip():
            return
        words = None
        if self._options.word_timestamps:
            words = [
                Word(w["word"], float(w["start"]), float(w["end"]), float(w["probability"]))
                for w in piece.get("words", [])
            ]
        segment = Segment(
            id=len(self.transcript.segments),
            seek=int(piece["seek"]),
            start=round(float(piece["start"]), 3),
            end=round(float(piece["end"]), 3),
            text=text,
            tokens=[int(t) for t in tokens],
            temperature=float(result.temperature),
            avg_logprob=float(result.avg_logprob),
            compression_ratio=float(result.compression_ratio),
            no_speech_prob=float(result.no_speech_prob),
            words=words,
        )
        self.transcript.segments.append(segment)
        self._ready.append(segment)
