"""The models this server offers: the bundled ones, the configured ones, and OpenAI's names for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voxserve import bundled
from voxserve.config import OPENAI_VOICES, Settings
from voxserve.engines.llama_chat import LlamaEngine
from voxserve.engines.piper_tts import PiperEngine, VoiceFiles, find_voices
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.engines.speech_chunks import ChunkPolicy
from voxserve.engines.text_to_speech import VoiceBook, VoiceEntry
from voxserve.engines.whisper import DecoderSettings, WhisperEngine

# Fixed creation times keep /v1/models stable across restarts.
_CREATED = 1732147200


def _whisper_spec(settings: Settings, model_id: str, locate: Callable[[], Path | str]) -> ModelSpec:
    def load() -> WhisperEngine:
        return WhisperEngine.load(
            model_id,
            str(locate()),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.effective_cpu_threads,
            num_workers=settings.stt_concurrency,
            trim_padding=settings.whisper_trim_padding,
            settings=DecoderSettings(
                chunking=ChunkPolicy(
                    first_max_seconds=settings.whisper_first_chunk_seconds,
                    stream_first_max_seconds=settings.whisper_stream_first_chunk_seconds,
                    min_fill=settings.whisper_chunk_min_fill,
                ),
                batch_size=settings.whisper_batch_size,
                half_batches=settings.whisper_half_batches,
            ),
            warm_up=settings.whisper_warm_up,
        )

    return ModelSpec(id=model_id, kind="stt", loader=load, created=_CREATED)


def build_registry(settings: Settings) -> ModelRegistry:
    registry = ModelRegistry(ttl=settings.model_ttl)
    registry.add(_whisper_spec(settings, "whisper-base", lambda: bundled.whisper_base_dir(settings.cache_dir)))
    registry.add(_whisper_spec(settings, "whisper-tiny.en", bundled.whisper_tiny_en_dir))
    # A local CTranslate2 directory, or a Hugging Face repo id (downloaded where a hub is reachable).
    for model_id, source in settings.whisper_models.items():
        registry.add(_whisper_spec(settings, model_id, lambda source=source: source))
    for alias in settings.stt_aliases:
        registry.alias(alias, settings.default_stt_model)
    for pattern in settings.stt_alias_patterns:
        registry.alias_pattern(pattern, settings.default_stt_model)
    return registry


def _voice_spec(settings: Settings, files: VoiceFiles) -> ModelSpec:
    def load() -> PiperEngine:
        return PiperEngine.load(files, threads=settings.tts_threads)

    return ModelSpec(id=f"voice:{files.name}", kind="voice", loader=load, created=_CREATED)


def build_voices(settings: Settings, registry: ModelRegistry) -> VoiceBook:
    """Register the bundled voice and any in VOXSERVE_VOICES_DIR (same name: the directory wins)."""
    found = {v.name: v for v in find_voices(bundled.piper_voice_dir())}
    if settings.voices_dir is not None:
        found.update({v.name: v for v in find_voices(settings.voices_dir)})
    entries = {}
    for name, files in found.items():
        spec = _voice_spec(settings, files)
        registry.add(spec)
        entries[name] = VoiceEntry(name, spec, files.sample_rate)
    mapping = {voice: settings.voice_map.get(voice, settings.default_voice) for voice in OPENAI_VOICES}
    mapping.update({k: v for k, v in settings.voice_map.items() if k not in mapping})
    for openai_name, local in mapping.items():
        if local not in entries:
            raise ValueError(f"voice map: `{openai_name}` points to unknown voice `{local}`")
    # The TTS model id names the engine; which voice speaks is the request's `voice`.
    registry.add(ModelSpec(id="piper", kind="tts", loader=lambda: None, created=_CREATED))
    for alias in settings.tts_aliases:
        registry.alias(alias, settings.default_tts_model)
    for pattern in settings.tts_alias_patterns:
        registry.alias_pattern(pattern, settings.default_tts_model)
    return VoiceBook(entries, mapping)


def add_chat_models(settings: Settings, registry: ModelRegistry) -> None:
    """The bundled Qwen chat models, any configured GGUF files, and OpenAI's audio-chat names."""
    sources: dict[str, Callable[[], Path | str]] = {
        "qwen2.5-coder-0.5b": lambda: bundled.split_gguf_path(bundled.QWEN_CODER_05B, settings.cache_dir)
    }
    # Opt-in installs: offered when their packages are there.
    if bundled.QWEN_CODER_15B.is_installed():
        sources["qwen2.5-coder-1.5b"] = lambda: bundled.split_gguf_path(bundled.QWEN_CODER_15B, settings.cache_dir)
    if bundled.smollm2_installed():
        sources["smollm2-135m"] = bundled.smollm2_gguf_path
    sources.update({model_id: (lambda path=path: path) for model_id, path in settings.gguf_models.items()})
    for model_id, locate in sources.items():

        def load(model_id: str = model_id, locate: Callable[[], Path | str] = locate) -> LlamaEngine:
            return LlamaEngine.load(
                model_id, str(locate()), threads=settings.chat_threads, context=settings.chat_context
            )

        registry.add(ModelSpec(id=model_id, kind="chat", loader=load, created=_CREATED))
    for alias in settings.chat_aliases:
        registry.alias(alias, settings.default_chat_model)
    for pattern in settings.chat_alias_patterns:
        registry.alias_pattern(pattern, settings.default_chat_model)


REALTIME_MODEL = "voxserve-realtime"


def add_realtime_model(settings: Settings, registry: ModelRegistry) -> None:
    """The realtime (speech-to-speech) model: nothing of its own to load, it chains the default models of
    the other kinds, which `info` names. OpenAI's realtime names resolve to it."""
    info = {
        "stt_model": settings.default_stt_model,
        "chat_model": settings.default_chat_model,
        "tts_model": settings.default_tts_model,
    }
    registry.add(ModelSpec(id=REALTIME_MODEL, kind="realtime", loader=lambda: None, created=_CREATED, info=info))
    for alias in settings.realtime_aliases:
        registry.alias(alias, REALTIME_MODEL)
    for pattern in settings.realtime_alias_patterns:
        registry.alias_pattern(pattern, REALTIME_MODEL)
