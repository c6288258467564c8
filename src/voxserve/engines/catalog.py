"""The models this server offers: the bundled ones, the configured ones, and OpenAI's names for them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from voxserve import bundled
from voxserve.config import Settings
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.engines.whisper import WhisperEngine

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
        )

    return ModelSpec(id=model_id, kind="stt", loader=load, created=_CREATED)


def build_registry(settings: Settings) -> ModelRegistry:
    registry = ModelRegistry(ttl=settings.model_ttl)
    registry.add(
        _whisper_spec(settings, "whisper-base", lambda: bundled.whisper_base_dir(settings.cache_dir))
    )
    registry.add(_whisper_spec(settings, "whisper-tiny.en", bundled.whisper_tiny_en_dir))
    # A local CTranslate2 directory, or a Hugging Face repo id (downloaded where a hub is reachable).
    for model_id, source in settings.whisper_models.items():
        registry.add(_whisper_spec(settings, model_id, lambda source=source: source))
    for alias in settings.stt_aliases:
        registry.alias(alias, settings.default_stt_model)
    return registry
