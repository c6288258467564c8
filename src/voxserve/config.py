"""Settings, read from `VOXSERVE_*` environment variables (and a `.env` file)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STT_ALIASES = (
    "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe", "gpt-live-transcribe",
    "gpt-realtime-whisper",
)  # fmt: skip
DEFAULT_TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "nova",
    "onyx", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
BUNDLED_VOICE = "en_US-joe-medium"
DEFAULT_CHAT_ALIASES = (
    "gpt-4o-audio-preview", "gpt-4o-mini-audio-preview", "gpt-audio", "gpt-audio-mini", "gpt-4o", "gpt-4o-mini",
)  # fmt: skip
DEFAULT_REALTIME_ALIASES = (
    "gpt-realtime", "gpt-realtime-mini", "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview",
)  # fmt: skip
# Alias patterns (whole-name regular expressions), tried after the exact ids and aliases, per kind: a new
# dated snapshot or member of a known OpenAI family resolves without a release.
_DATE = r"(-\d{4}-\d{2}-\d{2})?"
DEFAULT_STT_ALIAS_PATTERNS = (
    rf"whisper-1{_DATE}",
    rf"gpt(-[a-z0-9.]+)*-transcribe{_DATE}",  # gpt-4o-transcribe, gpt-4o-mini-transcribe, gpt-live-transcribe
    rf"gpt-realtime-whisper{_DATE}",
)
DEFAULT_TTS_ALIAS_PATTERNS = (r"tts-1(-hd)?(-\d{4})?", rf"gpt(-[a-z0-9.]+)*-tts{_DATE}")
DEFAULT_CHAT_ALIAS_PATTERNS = (
    r"gpt-(4o-)?(mini-)?audio(-[a-z0-9.]+)*",  # gpt-audio-1.5, gpt-4o-audio-preview-2025-06-03, ...
    rf"gpt-4o(-mini)?{_DATE}",
)
DEFAULT_REALTIME_ALIAS_PATTERNS = (
    # gpt-realtime-2.1, gpt-realtime-mini-2025-10-06, gpt-4o-realtime-preview-...; not gpt-realtime-whisper (STT).
    r"gpt-(4o-)?(mini-)?realtime(?!-whisper)(-[a-z0-9.]+)*",
)
# Added as a system message when a spoken answer is asked for and the messages carry no system or
# developer message: small models otherwise answer at essay length, which takes minutes to speak.
# Short on purpose: the 0.5B default model answers more questions right under a one-line instruction than
# under a paragraph of style rules (measured on the spoken-question set: 20-22/24 vs 19/24 on text input).
# "Say the answer first" (pass 5, greedy, both question sets): typed 20 -> 21 and 21 -> 22 of 24, spoken
# (espeak-ng, Whisper base) 19 -> 19 and 19 -> 20. Two worked examples in the instruction or as earlier
# turns won on the first set and lost 1-3 on the fresh one, and one turned the seed's golden retriever
# question into "No", so none is given.
DEFAULT_VOICE_INSTRUCTIONS = "Answer briefly, in one sentence. Say the answer first."


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "voxserve"


def _split_csv(value: object) -> object:
    # Env vars arrive as "a,b,c"; JSON lists are accepted too.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VOXSERVE_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    allow_unauthenticated: bool = False
    log_level: str = "info"
    # "json": one JSON object per log line, with an access line per request (request id, model, timings).
    log_format: Literal["text", "json"] = "text"
    # Whether GET /metrics needs a key when API keys are set; unset: not on a loopback bind, yes elsewhere.
    metrics_require_key: bool | None = None

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    max_upload_mb: float = 25.0
    # Decoded audio is capped by duration, not bytes: a small, highly compressed upload can hold hours.
    max_audio_seconds: float = 3600.0
    # Read deadlines for slow clients, in seconds: request line and headers; the longest wait for the
    # next piece of a body; the whole body (a 25 MB upload at 100 KB/s takes about 250 s).
    header_timeout: float = Field(10.0, gt=0)
    body_idle_timeout: float = Field(30.0, gt=0)
    body_timeout: float = Field(300.0, gt=0)

    # Model registry
    default_stt_model: str = "whisper-base"
    stt_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_STT_ALIASES))
    # Extra Whisper models: JSON object {"id": "/local/ct2/dir" or "hub/repo-id"}.
    whisper_models: dict[str, str] = Field(default_factory=dict)
    model_ttl: float = 300.0
    preload: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Whisper runtime
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: every core
    beam_size: int = 5
    # Encode only the audio in each Whisper window, not its padding to 30 s (see engines/whisper.py).
    whisper_trim_padding: bool = True
    # Chunks of long audio decoded together in one beam search (faster on long audio; each step of a
    # transcription is one batch, so larger batches also make a step longer).
    whisper_batch_size: int = 4
    # The first chunk of audio longer than 30 s is at most this long, so a stream's first delta comes early.
    whisper_first_chunk_seconds: float = 10.0
    # The same for a streamed transcription (stream=true), whose first delta waits for its first chunk; a
    # short first chunk costs a little accuracy and speed, so requests that are not streamed keep the above.
    whisper_stream_first_chunk_seconds: float = 6.0
    # A chunk of long audio is cut at a pause that leaves it at least this full (of 30 s): fuller windows
    # mean fewer encoder passes and beam searches (dev-speech's 231 s reading: 11 windows at 0.5, 9 at 0.9).
    whisper_chunk_min_fill: float = 0.9
    # Encode one 30 s window of silence at load and decode it as a batch, then trim the freed heap
    # (whisper-base resident after load: 266 MiB, 251 without). A batch-sized warm-up once took the first long
    # input of a process ~10% faster on tiny.en but kept ~85 MiB more resident; since a batch's windows are
    # encoded one per call no gain was measured. Off by default.
    whisper_warm_up: bool = False
    # Long audio's batches run as two half-batches at once on a second instance of the weights, each replica
    # with half the transcription threads (loaded on the first long input: resident +88 MiB tiny.en, +165 MiB
    # whisper-base). Same text; 231 s reading ~10-15% faster in-process. False keeps one instance per model.
    whisper_half_batches: bool = True

    # Admission control for the speech-to-text engine
    stt_concurrency: int = 2
    stt_queue: int = 8

    # Text to speech
    default_tts_model: str = "piper"
    tts_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_TTS_ALIASES))
    voices_dir: Path | None = None  # more Piper voices: <name>.onnx + <name>.onnx.json
    # OpenAI voice name -> local voice; names left out map to `default_voice`.
    voice_map: dict[str, str] = Field(default_factory=dict)
    default_voice: str = BUNDLED_VOICE
    tts_threads: int = 0  # onnxruntime threads per synthesis; 0: every core
    tts_concurrency: int = 2
    tts_queue: int = 8

    # Chat: the embedded GGUF model, or an upstream OpenAI-compatible server
    default_chat_model: str = "qwen2.5-coder-0.5b"
    chat_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_CHAT_ALIASES))
    gguf_models: dict[str, str] = Field(default_factory=dict)  # more local GGUF chat models: id -> path
    chat_threads: int = 0  # llama.cpp threads; 0: every core
    chat_context: int = 4096
    chat_queue: int = 8
    chat_upstream_url: str | None = None  # e.g. http://localhost:11434/v1 (Ollama)
    chat_upstream_api_key: str | None = None
    chat_upstream_model: str | None = None  # upstream model used for every request, unless mapped
    chat_upstream_model_map: dict[str, str] = Field(default_factory=dict)
    chat_upstream_timeout: float = 120.0
    chat_upstream_connect_timeout: float = 5.0
    # Spoken questions are decoded greedily: on a short question it is as accurate and about 0.2 s sooner.
    chat_stt_beam_size: int = 1
    audio_answer_ttl: int = 3600  # seconds a spoken answer's id can be referred to
    audio_answer_max: int = 10_000

    # Realtime API (WebSocket /v1/realtime)
    realtime_max_sessions: int = 8  # concurrent sessions; more are refused at the handshake (429)
    # Signs ephemeral keys (ek_...). Unset: a random secret per start (keys die with a restart);
    # replicas given the same secret accept each other's keys.
    realtime_key_secret: str | None = None
    realtime_session_seconds: int = 3600  # a session's longest life (OpenAI: 60 minutes)
    realtime_live_deltas: bool = True  # transcription deltas while the user is still speaking
    realtime_partial_interval_ms: int = 500  # new audio between two live decodes of an utterance
    realtime_partial_beam_size: int = 1  # live decodes are greedy; the final one uses `beam_size`
    # True: a live word goes out once 2 live decodes agree on it with word probabilities >= 0.6 (3
    # otherwise, each >= 0.3): first words ~0.15 s sooner, ~0.5 WER points worse (benchmarks/realtime.py).
    # False: once 3 live decodes agree
    realtime_live_confidence: bool = False
    # Conversation sessions: the history kept for the chat model, in tokens (0: the chat context)
    realtime_history_tokens: int = Field(0, ge=0)
    # A turn's final decode re-decodes an unsure trimmed window at Whisper's full 30 s, as REST does:
    # about 1 WER point better, but ~2 s later on those turns (benchmarks/realtime.py). False: latency first.
    realtime_final_full_window: bool = True

    # Voice chat (chat completions with audio out; realtime conversations)
    voice_instructions: str = DEFAULT_VOICE_INSTRUCTIONS  # empty: no default instruction
    # Embedded chat generation defaults, when the request does not say (see README: sampling)
    chat_max_tokens: int = Field(1024, ge=1)
    chat_temperature: float = Field(0.0, ge=0.0, le=2.0)  # greedy: see README, sampling
    chat_top_p: float = Field(0.95, gt=0.0, le=1.0)
    chat_top_k: int = Field(40, ge=0)
    chat_min_p: float = Field(0.05, ge=0.0, le=1.0)
    chat_repeat_penalty: float = Field(1.1, ge=1.0, le=2.0)
    # glibc malloc: 2 heaps, free pages given back after model loads (see process_memory.py); False: glibc's defaults
    malloc_tuning: bool = True

    # Alias patterns per kind (whole-name regular expressions) and the realtime aliases
    stt_alias_patterns: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_STT_ALIAS_PATTERNS))
    tts_alias_patterns: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_TTS_ALIAS_PATTERNS))
    chat_alias_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CHAT_ALIAS_PATTERNS)
    )
    realtime_aliases: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_REALTIME_ALIASES))
    realtime_alias_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_REALTIME_ALIAS_PATTERNS)
    )

    @field_validator("api_keys", "stt_aliases", "tts_aliases", "chat_aliases", "preload", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator(
        "stt_alias_patterns", "tts_alias_patterns", "chat_alias_patterns", "realtime_aliases",
        "realtime_alias_patterns", mode="before",
    )  # fmt: skip
    @classmethod
    def _csv_list(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("stt_alias_patterns", "tts_alias_patterns", "chat_alias_patterns", "realtime_alias_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"alias pattern {pattern!r} is not a regular expression: {exc}") from exc
        return patterns

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def effective_cpu_threads(self) -> int:
        return self.cpu_threads if self.cpu_threads > 0 else (os.cpu_count() or 1)
