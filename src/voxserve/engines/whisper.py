"""Speech to text with faster-whisper (CTranslate2), gated by Silero VAD so silence yields no text."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions

from voxserve.audio.decode import STT_SAMPLE_RATE
from voxserve.errors import InvalidRequest
from voxserve.languages import LANGUAGES
from voxserve.transcript import Segment, Transcript, Word

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD parameters, named as in OpenAI's `server_vad` chunking strategy."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200

    def to_faster_whisper(self) -> VadOptions:
        # faster-whisper pads each speech chunk on both sides by speech_pad_ms; the silence duration
        # is the gap that ends a chunk. Chunks are merged up to Whisper's 30 s window.
        return VadOptions(
            threshold=self.threshold,
            min_silence_duration_ms=self.silence_duration_ms,
            speech_pad_ms=self.prefix_padding_ms,
        )


# What a request with no chunking strategy uses: a gentler gap than server_vad's 200 ms default, so
# a sentence is not cut at every breath; the gate against silence and noise is the same.
DEFAULT_VAD = VadSettings(threshold=0.5, prefix_padding_ms=400, silence_duration_ms=1000)


@dataclass(frozen=True)
class TranscribeOptions:
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    vad: VadSettings = field(default_factory=lambda: DEFAULT_VAD)
    beam_size: int = 5


def temperature_schedule(temperature: float) -> tuple[float, ...]:
    """0 means Whisper's own fallback ladder; a higher value starts the ladder there."""
    steps = []
    current = temperature
    while current <= 1.0 + 1e-9:
        steps.append(round(current, 2))
        current += 0.2
    return tuple(steps) or (temperature,)


class TranscriptionRun:
    """A transcription in progress: `transcript` fills as `segments()` is iterated.

    Each step of the iterator runs the decoder on the next window, so a caller streaming results
    pulls one step at a time (off the event loop) and sends each segment as soon as it exists.
    """

    def __init__(self, transcript: Transcript, raw_segments: Iterator[Any]) -> None:
        self.transcript = transcript
        self._steps = self._convert_all(raw_segments)

    def _convert_all(self, raw_segments: Iterator[Any]) -> Iterator[Segment]:
        for raw in raw_segments:
            segment = _convert(len(self.transcript.segments), raw)
            self.transcript.segments.append(segment)
            yield segment

    def next_segment(self) -> Segment | None:
        """One decoding step; None when finished. Shaped for `run_in_executor`."""
        return next(self._steps, None)

    def run_to_end(self) -> Transcript:
        for _ in self._steps:
            pass
        return self.transcript


def _convert(index: int, raw: Any) -> Segment:
    words = None
    if raw.words is not None:
        words = [Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in raw.words]
    return Segment(
        id=index,
        seek=int(raw.seek),
        start=float(raw.start),
        end=float(raw.end),
        text=raw.text,
        tokens=[int(t) for t in raw.tokens],
        temperature=float(raw.temperature if raw.temperature is not None else 0.0),
        avg_logprob=float(raw.avg_logprob),
        compression_ratio=float(raw.compression_ratio),
        no_speech_prob=float(raw.no_speech_prob),
        words=words,
    )


# Frames (10 ms each) of padding kept after the audio when a window is trimmed: with less, Whisper's
# last words and end timestamps got less reliable in trials; more only costs time.
_PADDING_KEPT = 300


def trimmed_window(features: np.ndarray) -> np.ndarray:
    """A padded 30 s window cut to its audio plus `_PADDING_KEPT` frames, in whole 100-frame steps.

    faster-whisper pads every window to 3000 frames with zeros (real silence is never exactly zero
    after log-mel normalisation). Whisper's encoder costs the same for 3 s of speech as for 30 s, so a
    short question spent 0.5 s of its 0.9 s in the encoder on padding; whisper.cpp's `audio_ctx` does
    the same trim. Transcripts of the test clips were identical with and without it.
    """
    frames = features.shape[-1]
    columns = np.flatnonzero(np.any(features.reshape(-1, frames) != 0, axis=0))
    used = int(columns[-1]) + 1 if columns.size else 0
    keep = min(frames, -(-(used + _PADDING_KEPT) // 100) * 100)
    return features[..., :keep] if keep < frames else features


class _SharedEncodeWhisperModel(WhisperModel):
    """WhisperModel that encodes the first window once, not twice, when it detects the language, and
    (with `trim_padding`) encodes only the audio in a window, not Whisper's padding to 30 s.

    faster-whisper runs the encoder for language detection and then again for decoding the same 30 s
    window: on whisper-base with 2 cores that is 0.5 s spent twice on every request without a
    `language`. Detection here sees the frames decoding will see (without the partial last frame),
    and its encoder output is kept, keyed by the frames' digest, for the decoder's first window.
    """

    _KEEP = 8  # detections whose first window has not been decoded yet (concurrent requests)

    def __init__(self, *args: Any, trim_padding: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trim_padding = trim_padding
        self._kept: OrderedDict[bytes, ctranslate2.StorageView] = OrderedDict()
        self._kept_lock = threading.Lock()
        self._detecting = threading.local()

    @staticmethod
    def _digest(features: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(features).view(np.uint8), digest_size=16).digest()

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        key = self._digest(features)
        with self._kept_lock:
            kept = self._kept.pop(key, None)
        if kept is not None:
            return kept
        output = super().encode(trimmed_window(features) if self.trim_padding else features)
        if getattr(self._detecting, "active", False):
            with self._kept_lock:
                self._kept[key] = output
                while len(self._kept) > self._KEEP:
                    self._kept.popitem(last=False)
        return output

    def detect_language(self, audio: Any = None, features: Any = None, **kwargs: Any) -> Any:
        if features is not None and audio is None and features.shape[-1] > 1:
            features = features[..., :-1]  # decoding never includes the last, partial frame
        self._detecting.active = True
        try:
            return super().detect_language(audio=audio, features=features, **kwargs)
        finally:
            self._detecting.active = False


class WhisperEngine:
    def __init__(self, model: WhisperModel, name: str) -> None:
        self.model = model
        self.name = name

    @classmethod
    def load(
        cls,
        name: str,
        path_or_repo: str,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
        num_workers: int = 1,
        trim_padding: bool = True,
    ) -> WhisperEngine:
        model = _SharedEncodeWhisperModel(
            path_or_repo,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            trim_padding=trim_padding,
        )
        return cls(model, name)

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def check(self, options: TranscribeOptions) -> None:
        """Refuse what this model cannot do, before any audio is processed."""
        if options.task == "translate" and not self.multilingual:
            raise InvalidRequest(
                f"The model `{self.name}` is English-only and cannot translate. "
                "Use a multilingual model such as `whisper-base` (the default).",
                param="model",
                code="unsupported_value",
            )
        if options.language is not None:
            if options.language not in LANGUAGES:
                raise InvalidRequest(
                    f"Unsupported language `{options.language}`: use an ISO-639-1 code such as `en`.",
                    param="language",
                    code="unsupported_value",
                )
            if not self.multilingual and options.language != "en":
                raise InvalidRequest(
                    f"The model `{self.name}` is English-only; language `{options.language}` needs a "
                    "multilingual model such as `whisper-base`.",
                    param="language",
                    code="unsupported_value",
                )

    def start(self, audio: np.ndarray, options: TranscribeOptions) -> TranscriptionRun:
        """Detect language and prepare decoding; segments are decoded lazily by the returned run."""
        self.check(options)
        raw_segments, info = self.model.transcribe(
            audio,
            task=options.task,
            language=options.language if self.multilingual else "en",
            initial_prompt=options.prompt or None,
            temperature=temperature_schedule(options.temperature),
            beam_size=options.beam_size,
            word_timestamps=options.word_timestamps,
            vad_filter=True,
            vad_parameters=options.vad.to_faster_whisper(),
        )
        prompt_tokens = len(self.model.hf_tokenizer.encode(options.prompt).ids) if options.prompt else 0
        transcript = Transcript(
            task=options.task,
            language=info.language or "en",
            duration=len(audio) / STT_SAMPLE_RATE,
            prompt_tokens=prompt_tokens,
            language_probability=float(info.language_probability or 1.0),
        )
        return TranscriptionRun(transcript, iter(raw_segments))
