"""Speech to text with Whisper (CTranslate2 weights through faster-whisper), one VAD chunk batch at a time.

The input is cut into chunks of speech by Silero VAD (`speech_chunks`), each at most one 30 s window
and each ending in a pause. Every chunk is decoded as one Whisper window, with beam search and Whisper's
temperature fallback. Audio of several chunks is decoded without timestamp tokens, so a chunk is never cut
short by an early end of text; a single chunk keeps Whisper's timestamps. Chunks after the first are decoded
in batches (one encoder call and one beam search for several windows), which is where long audio gets
faster than Whisper's own sequential loop; the first chunk is decoded alone, so a streamed transcript
starts early. Word timestamps are aligned after a chunk's text is final, so asking for them (or for
logprobs) never changes the text.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_suppressed_tokens

from voxserve import process_memory
from voxserve.audio.decode import STT_SAMPLE_RATE
from voxserve.engines import decode_fallback, whisper_language
from voxserve.engines.chunk_batches import WINDOW_FRAMES, Batch, ChunkBatches, Job
from voxserve.engines.decode_fallback import Decoded
from voxserve.engines.decode_fallback import temperature_schedule as temperature_schedule
from voxserve.engines.half_batches import HalfPair, encode_windows
from voxserve.engines.speech_chunks import Chunk, ChunkPolicy, Detection, StagedPlan
from voxserve.errors import InvalidRequest
from voxserve.languages import LANGUAGES
from voxserve.transcript import Transcript

log = logging.getLogger(__name__)

HOP = 160  # samples per mel frame
TIME_PRECISION = 0.02  # seconds per timestamp token
FRAMES_PER_SECOND = STT_SAMPLE_RATE // HOP  # log-mel frames
WINDOW_SECONDS = 30


@dataclass(frozen=True)
class VadSettings:
    """Silero VAD parameters, named as in OpenAI's `server_vad` chunking strategy."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 200

    def detection(self) -> Detection:
        return Detection(self.threshold, self.prefix_padding_ms, self.silence_duration_ms)


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
    # Only the window of audio plus 3 s, never a clip's 15 s one nor 30 s (to re-decode, or to detect the
    # language when unsure): for a realtime session's live decodes, whose text later decodes must confirm anyway.
    trimmed_only: bool = False
    # Sent as a stream of deltas: the first chunk of long audio is kept to the policy's streamed length.
    streamed: bool = False
    # A one-chunk input is encoded in a window of at least `short_window_frames`, kept unless the fallback
    # ran. False: its audio plus 3 s, decoded again at 30 s when Whisper is unsure of it (realtime turns,
    # whose parity with REST was measured that way; their decodes with the 15 s window lost words to it).
    clip_window: bool = True
    # False: a window whose decode fails (loops, or is improbable) is not decoded again down the
    # fallback's rungs; its failed text is returned as it is (a realtime session's live decodes, which read
    # a loop up to where it repeats and skip an improbable reading: the retries cost 0.6-0.8 s on
    # whisper-base, the time of three more readings).
    retry_failed: bool = True
    # Tokens a window's text may take per second of its audio, beyond its prompt and a few (None: Whisper's
    # 448): a decode that loops stops there rather than running to 448 tokens (~0.8 s on whisper-base).
    max_tokens_per_second: float | None = None


@dataclass(frozen=True)
class DecoderSettings:
    """How the engine decodes, the same for every request (see README, "Speech-to-text accuracy and speed")."""

    chunking: ChunkPolicy = field(default_factory=ChunkPolicy)
    batch_size: int = 4
    # Long audio's batches run as two half-batches at once on a second instance of the weights, each replica
    # with half the threads (half_batches.HalfPair); short clips, streams and realtime keep the engine's model.
    half_batches: bool = True
    # Windows per encoder call within a batch (0: the whole batch at once); see half_batches.encode_windows.
    encode_batch_size: int = 1
    # Encode only a window's audio plus `padding_kept_frames` of Whisper's padding, not all of it.
    trim_padding: bool = True
    padding_kept_frames: int = 300
    # A trimmed window's result is kept only when its average log probability is at least this.
    trim_trust_logprob: float = -0.35
    short_window_frames: int = 1500  # one-chunk input: windows at least this long, kept unless it failed (README)
    min_window_frames: int = 0  # what a run uses: short_window_frames for a clip, else 0
    # Below this top probability, the language is detected again on the full window.
    language_confidence: float = 0.5
    pad_with_silence: bool = False
    # Audio of more than one chunk is decoded as text only (no timestamp tokens): with them Whisper often
    # stops a window early and the rest of the chunk needs another window (dev-speech, the 231 s reading:
    # base 12.2 s -> 8.2 s at the same WER, tiny.en 34 -> 30 errors). A single chunk keeps timestamps:
    # there they cost no extra window and text-only decoding lost words (tiny.en, English clips: 70 -> 92
    # errors). Word timestamps come from alignment either way.
    without_timestamps: bool = True
    # Condition a continuation on the text before it (Whisper's way); without, it joins the next batch.
    continuation_context: bool = False
    condition_on_previous_text: bool = False
    # Align a text-only chunk's text to its audio and decode again what it left out (chunk_coverage).
    coverage_check: bool = True
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    best_of: int = 5


# Whisper sometimes ends a window early ("<|t|><|t|>" then end of text) and expects to be called again
# from <|t|>; a chunk is continued at most this many times (each continuation starts later).
_MAX_CONTINUATIONS = 8
_ENDS = (".", "!", "?", "。", "！", "？")


def _run_settings(settings: DecoderSettings, one_chunk: bool, options: TranscribeOptions) -> DecoderSettings:
    """The engine's settings for one run: an input of one chunk gets the clip window's floor, unless its
    decodes are live ones (`trimmed_only`) or it asked for the audio-plus-3 s window (`clip_window`)."""
    clip = one_chunk and not options.trimmed_only and options.clip_window
    return replace(settings, min_window_frames=settings.short_window_frames if clip else 0)


class TranscriptionRun(ChunkBatches):
    """A transcription in progress: `transcript` fills as segments are decoded.

    `next_segment` returns the next segment, decoding one step (the first chunk, or one batch of
    chunks) when none is waiting (`chunk_batches`); this class decides how each window is prompted,
    decoded, trusted and cut into segments.
    """

    def __init__(
        self,
        engine: WhisperEngine,
        audio: np.ndarray,
        chunks: list[Chunk],
        transcript: Transcript,
        options: TranscribeOptions,
        first: Batch | None,
        rest: Callable[[], list[Chunk]] | None = None,
    ) -> None:
        settings = _run_settings(engine.settings, len(chunks) == 1 and rest is None, options)
        super().__init__(engine.model, settings, audio, chunks, transcript, options, first, rest)
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self._model.model.is_multilingual,
            task=options.task,
            language=transcript.language if self._model.model.is_multilingual else "en",
        )
        self._suppress = list(get_suppressed_tokens(self._tokenizer, [-1]))
        settings = self._settings
        self._thresholds = decode_fallback.Thresholds(
            settings.compression_ratio_threshold, settings.log_prob_threshold, settings.no_speech_threshold
        )
        self._prompt_tokens = (
            self._tokenizer.encode(" " + options.prompt.strip()) if options.prompt and options.prompt.strip() else []
        )
        self._text_only = self._settings.without_timestamps and (len(chunks) > 1 or rest is not None)
        self._pair = engine.pair if self._text_only else None
        self._previous: list[int] = []  # with condition_on_previous_text: everything decoded so far
        self.fallbacks = 0
        self.redone = 0

    def _redecode(
        self, batch: Batch, prompts: list[list[int]], results: list[Decoded]
    ) -> tuple[list[int], Batch | None]:
        trimmed = batch.trimmed and not self._options.trimmed_only
        redo = [i for i, result in enumerate(results) if trimmed and self._unsure(result)]
        full = None
        if redo:
            # An unsure trimmed window is decoded again from Whisper's exact input, the full 30 s window.
            full = Batch(self._model, [batch.features[i] for i in redo], self._settings, full=True, pair=self._pair)
            self.windows += len(redo)
            self.redone += len(redo)
            for i, result in zip(redo, self._decode(full, [prompts[i] for i in redo]), strict=True):
                results[i] = result
        return redo, full

    def _unsure(self, result: Decoded) -> bool:
        if result.fallback > 0 or self._settings.min_window_frames:  # a clip's longer window is kept unless it failed
            return result.fallback > 0
        return result.avg_logprob < self._settings.trim_trust_logprob and not self._silent(result)

    # -- decoding ----------------------------------------------------------------------------------

    def _prompt(self, job: Job) -> list[int]:
        tokenizer = self._tokenizer
        context = self._previous if self._settings.condition_on_previous_text else list(job.context)
        previous = (self._prompt_tokens + context)[-(self._model.max_length // 2 - 1) :]
        prompt = [tokenizer.sot_prev, *previous] if previous else []
        if self._text_only:
            return [*prompt, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        return prompt + list(tokenizer.sot_sequence)

    def _decode(self, batch: Batch, prompts: list[list[int]]) -> list[Decoded]:
        """Beam search for every window, then the fallback (`decode_fallback`) for those that fail."""

        def generate(indices: list[int], window_prompts: list[list[int]], options: dict[str, Any]) -> list[Any]:
            common = {
                "max_length": self._max_length(batch, indices, window_prompts),
                "return_scores": True,
                "return_no_speech_prob": True,
                "suppress_blank": True,
                "suppress_tokens": self._suppress,
                "max_initial_timestamp_index": round(1.0 / TIME_PRECISION),
            }
            if self._pair is not None and len(indices) >= 2:
                return self._pair.generate(
                    lambda half: batch.subset([indices[i] for i in half]), window_prompts, **common, **options
                )
            return self._model.model.generate(batch.subset(indices), window_prompts, **common, **options)

        tokenizer = self._tokenizer
        results, fallbacks = decode_fallback.decode(
            generate,
            prompts,
            tokenizer.decode,
            temperature=self._options.temperature,
            beam_size=self._options.beam_size,
            best_of=self._settings.best_of,
            thresholds=self._thresholds,
            shape=decode_fallback.PromptShape(tokenizer.sot_prev, tokenizer.sot, tokenizer.no_timestamps),
            retry=self._options.retry_failed,
        )
        self.fallbacks += fallbacks
        return results

    def _max_length(self, batch: Batch, indices: list[int], prompts: list[list[int]]) -> int:
        rate = self._options.max_tokens_per_second
        if rate is None:
            return int(self._model.max_length)
        seconds = max(batch.content_frames[i] for i in indices) / FRAMES_PER_SECOND
        text = 8 + math.ceil(rate * seconds)  # CTranslate2 counts the prompt in max_length
        return min(int(self._model.max_length), max(map(len, prompts)) + text)

    def _silent(self, result: Decoded) -> bool:
        return self._thresholds.silent(result)

    def _split(self, job: Job, result: Decoded, content_frames: int) -> tuple[list[dict[str, Any]], Job | None]:
        """The window's segments by Whisper's timestamp tokens (in seconds from the input's start), and
        the rest of the chunk to decode next if Whisper stopped before its end."""
        if self._silent(result):
            return [], None  # Whisper's own verdict: no speech here after all
        tokenizer = self._tokenizer
        begin = tokenizer.timestamp_begin
        tokens = result.tokens
        duration = content_frames * HOP / STT_SAMPLE_RATE
        cuts = [i for i in range(1, len(tokens)) if tokens[i] >= begin and tokens[i - 1] >= begin]
        single_ending = len(tokens) >= 2 and tokens[-2] < begin <= tokens[-1]
        bounds = [0, *cuts]
        continuation = None
        if cuts and not single_ending:
            # Whisper left the last segment open: decode again from the last closed timestamp, as its
            # own sequential loop does, conditioned on what this window said.
            resume = (tokens[cuts[-1] - 1] - begin) * TIME_PRECISION
            start = job.chunk.start + round(resume * STT_SAMPLE_RATE)
            if resume > 0 and start < job.chunk.end - HOP and job.continued < _MAX_CONTINUATIONS:
                context = (*job.context, *tokens[: cuts[-1]]) if self._settings.continuation_context else ()
                continuation = Job(Chunk(start, job.chunk.end), job.slot, context, job.continued + 1)
            pieces = [tokens[a:b] for a, b in itertools.pairwise(bounds)]
        else:
            pieces = [tokens[a:b] for a, b in itertools.pairwise([*bounds, len(tokens)])]
        if not cuts and not any(t >= begin for t in tokens):
            pieces = self._sentences(tokens)
        if self._settings.condition_on_previous_text:
            if decode_fallback.unfit_as_context(result):
                self._previous = []
            else:
                self._previous += [t for piece in pieces for t in piece]
        segments = []
        # Text without timestamp tokens: each sentence gets its share of the chunk by its length (word
        # alignment, when asked for, replaces these estimates with the words' own times).
        lengths = [max(1, len(tokenizer.decode(piece).strip())) for piece in pieces]
        shares = [duration * sum(lengths[:i]) / sum(lengths) for i in range(len(pieces) + 1)]
        for index, piece in enumerate(pieces):
            if not any(t < tokenizer.eot for t in piece):
                continue
            stamps = [t - begin for t in piece if t >= begin]
            start_s = stamps[0] * TIME_PRECISION if piece[0] >= begin else shares[index]
            end_s = stamps[-1] * TIME_PRECISION if piece[-1] >= begin else shares[index + 1]
            start_s = min(start_s, duration)
            end_s = min(max(end_s, start_s), duration)
            segments.append(
                {
                    "seek": round(job.chunk.start / HOP),
                    "start": job.chunk.offset + start_s,
                    "end": job.chunk.offset + end_s,
                    "tokens": piece,
                }
            )
        return segments, continuation

    def _sentences(self, tokens: list[int]) -> list[list[int]]:
        """Text tokens cut after each sentence end that a space follows (as a stream's deltas are)."""
        decode = self._tokenizer.decode
        pieces: list[list[int]] = []
        start = 0
        for index in range(1, len(tokens)):
            if decode([tokens[index]]).startswith(" ") and decode(tokens[start:index]).rstrip().endswith(_ENDS):
                pieces.append(tokens[start:index])
                start = index
        return [*pieces, tokens[start:]]


class WhisperEngine:
    def __init__(
        self, model: WhisperModel, name: str, settings: DecoderSettings | None = None, pair: HalfPair | None = None
    ) -> None:
        self.model = model
        self.name = name
        self.settings = settings or DecoderSettings()
        self.pair = pair  # long audio's batches as two half-batches at once (half_batches.HalfPair)

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
        settings: DecoderSettings | None = None,
        warm_up: bool = False,
    ) -> WhisperEngine:
        model = WhisperModel(
            path_or_repo,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
        )
        settings = replace(settings or DecoderSettings(), trim_padding=trim_padding)
        pair = None
        threads = cpu_threads or os.cpu_count() or 1
        if settings.half_batches and device == "cpu" and threads >= 2 and Path(path_or_repo).is_dir():
            pair = HalfPair(path_or_repo, device, compute_type, threads_each=threads // 2)
        engine = cls(model, name, settings, pair)
        if warm_up:
            engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """Encode one 30 s window of silence and decode it as a full batch, so the first long input does not
        pay CTranslate2's first allocations at the largest shapes. In interleaved runs on the 231 s dev-speech
        reading (tiny.en, 2 cores) a warm-up took its decode from 5.44 s to 4.84 s on the first run and from
        5.28 s to 4.89 s on the next (3 processes each): without it the first batched windows of a process
        were slower, and the text is the same either way. One window is encoded, as a batch's windows are
        (`encode_windows`); the beam search gets the batch's copies of it."""
        model = self.model
        count = max(1, self.settings.batch_size)
        features = model.feature_extractor(np.zeros(WINDOW_SECONDS * STT_SAMPLE_RATE, dtype=np.float32))
        window = np.ascontiguousarray(features[None, :, :WINDOW_FRAMES], dtype=np.float32)
        per_call = self.settings.encode_batch_size or count
        encoded = encode_windows(model, np.repeat(window, min(count, per_call), axis=0), per_call)
        if count > per_call:
            copies = np.repeat(np.asarray(encoded)[:1], count, axis=0)
            encoded = ctranslate2.StorageView.from_array(np.ascontiguousarray(copies))
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        model.model.generate(
            encoded, [prompt] * count, beam_size=5, max_length=64, return_scores=True, return_no_speech_prob=True
        )
        # CTranslate2's freed buffers stay in the heaps: whisper-base's resident memory after load was 508 MiB
        # with them, 266 MiB once trimmed (251 MiB with no warm-up).
        process_memory.release()

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

    def _detect_language(
        self, features: np.ndarray, first: Batch, trimmed_only: bool, beam_size: int
    ) -> tuple[str, float, Batch]:
        """The first chunk's language, its probability, and the encoding to decode it from (`whisper_language`)."""
        encoded: list[Batch] = []

        def full() -> Callable[[int], Any]:
            encoded.append(Batch(self.model, [features], self.settings, full=True))
            return lambda copies: encoded[0].subset([0] * copies)

        allowed = first.trimmed and not trimmed_only
        verdict = whisper_language.detect(
            self.model, first.encoded, full if allowed else None, self.settings.language_confidence, beam_size
        )
        return verdict.language, verdict.probability, encoded[0] if encoded else first

    def start(self, audio: np.ndarray, options: TranscribeOptions) -> TranscriptionRun:
        """Find the speech, encode the first chunk and detect the language from it; the rest of the
        decoding happens step by step in the returned run."""
        self.check(options)
        # Long audio: the first chunk is planned from the opening seconds, the rest once it is decoded.
        policy = self.settings.chunking
        if options.streamed:
            policy = replace(policy, first_max_seconds=policy.stream_first_max_seconds)
        plan = StagedPlan(audio, options.vad.detection(), policy)
        chunks = plan.first
        language = options.language if self.multilingual else "en"
        first = None
        probability = 1.0  # the language was given (or the model knows only one)
        if chunks:
            # The first window's encoding serves both language detection and decoding.
            features = self.model.feature_extractor(audio[chunks[0].start : chunks[0].end])[..., :-1]
            settings = _run_settings(self.settings, len(chunks) == 1 and not plan.pending, options)
            first = Batch(self.model, [features], settings)
            if language is None:
                language, probability, first = self._detect_language(
                    features, first, options.trimmed_only, options.beam_size
                )
        prompt_tokens = len(self.model.hf_tokenizer.encode(options.prompt).ids) if options.prompt else 0
        transcript = Transcript(
            task=options.task,
            language=language or "en",
            duration=len(audio) / STT_SAMPLE_RATE,
            prompt_tokens=prompt_tokens,
            language_probability=probability,
        )
        return TranscriptionRun(self, audio, chunks, transcript, options, first, plan.rest if plan.pending else None)
