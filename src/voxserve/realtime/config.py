"""Session configuration: the input-audio part every session has, and the transcription session.

One internal form, read from and written to both wire shapes: GA (`audio.input.{format, transcription,
noise_reduction, turn_detection}`, formats as objects) and beta (flat `input_audio_format`,
`input_audio_transcription`, `input_audio_noise_reduction`, `turn_detection`). An update carries only
the fields it changes; `null` clears a field that can be off. Unknown fields are refused (a typo must
not be silently ignored); known fields that do not apply here are accepted and ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxserve.realtime.errors import ClientEventError, from_validation

LOGPROBS = "item.input_audio_transcription.logprobs"
GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
BETA_FORMATS = {v: k for k, v in GA_FORMATS.items()}

# semantic_vad has no turn-end model here: its eagerness picks server VAD's silence duration (ms).
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 800, "auto": 800, "high": 400}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranscriptionIn(_Strict):
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    languages: list[str] | None = Field(None, min_length=1)
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


class NoiseReductionIn(_Strict):
    type: Literal["near_field", "far_field"]
    strength: float | None = Field(None, ge=0.0, le=1.0)


class ServerVadIn(_Strict):
    type: Literal["server_vad"]
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = Field(None, ge=5_000, le=30_000)


class SemanticVadIn(_Strict):
    type: Literal["semantic_vad"]
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetectionIn = Annotated[ServerVadIn | SemanticVadIn, Field(discriminator="type")]


class FormatIn(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"] = "audio/pcm"
    rate: Literal[24000] | None = None


class AudioInputIn(_Strict):
    format: FormatIn | None = None
    transcription: TranscriptionIn | None = None
    noise_reduction: NoiseReductionIn | None = None
    turn_detection: TurnDetectionIn | None = None


class AudioIn(_Strict):
    input: AudioInputIn | None = None
    output: dict[str, Any] | None = None  # a conversation's; accepted and ignored by transcription


class GATranscriptionIn(_Strict):
    type: Literal["transcription"] | None = None
    audio: AudioIn | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    # Read-only fields a client may send back from `session.created`: ignored.
    id: str | None = None
    object: str | None = None
    expires_at: int | None = None


class BetaTranscriptionIn(_Strict):
    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    input_audio_transcription: TranscriptionIn | None = None
    input_audio_noise_reduction: NoiseReductionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    client_secret: dict[str, Any] | None = None
    id: str | None = None
    object: str | None = None
    expires_at: int | None = None


BETA_FLAT_KEYS = frozenset(BetaTranscriptionIn.model_fields) - {"include", "id", "object", "expires_at"}


@dataclass(frozen=True)
class InputTranscription:
    model: str
    language: str | None = None
    prompt: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # languages / keywords / delay: echoed, not used by Whisper

    @property
    def whisper_language(self) -> str | None:
        return self.language or None  # "" (the seed's payload) means: detect it


@dataclass(frozen=True)
class TurnDetection:
    type: str = "server_vad"
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    eagerness: str | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None

    @property
    def effective_silence_ms(self) -> int:
        if self.type == "semantic_vad":
            return SEMANTIC_SILENCE_MS[self.eagerness or "auto"]
        return self.silence_duration_ms


@dataclass(frozen=True)
class NoiseReduction:
    type: str
    strength: float | None = None


@dataclass(frozen=True)
class InputAudioConfig:
    format: str = "pcm16"
    transcription: InputTranscription | None = None
    noise_reduction: NoiseReduction | None = None
    turn_detection: TurnDetection | None = TurnDetection()


@dataclass(frozen=True)
class TranscriptionSessionConfig:
    input: InputAudioConfig = InputAudioConfig()
    include: tuple[str, ...] | None = None

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in (self.include or ())


def _transcription(value: TranscriptionIn | None, default_model: str) -> InputTranscription | None:
    if value is None:
        return None
    extra = tuple((k, getattr(value, k)) for k in ("languages", "keywords", "delay") if getattr(value, k) is not None)
    return InputTranscription(value.model or default_model, value.language, value.prompt, extra)


def _turn_detection(value: ServerVadIn | SemanticVadIn | None) -> TurnDetection | None:
    if value is None:
        return None
    if isinstance(value, SemanticVadIn):
        return TurnDetection(
            type="semantic_vad",
            eagerness=value.eagerness,
            create_response=value.create_response,
            interrupt_response=value.interrupt_response,
        )
    return TurnDetection(
        type="server_vad",
        threshold=value.threshold,
        prefix_padding_ms=value.prefix_padding_ms,
        silence_duration_ms=value.silence_duration_ms,
        create_response=value.create_response,
        interrupt_response=value.interrupt_response,
        idle_timeout_ms=value.idle_timeout_ms,
    )


def _noise(value: NoiseReductionIn | None) -> NoiseReduction | None:
    return None if value is None else NoiseReduction(value.type, value.strength)


def apply_input_patch(
    current: InputAudioConfig, given: AudioInputIn, default_model: str, *, beta_format: str | None = None
) -> InputAudioConfig:
    """`current` with each field `given` mentions replaced (a present `null` turns it off)."""
    changes: dict[str, Any] = {}
    fields = given.model_fields_set
    if "format" in fields:
        changes["format"] = GA_FORMATS[given.format.type] if given.format is not None else "pcm16"
    if beta_format is not None:
        changes["format"] = beta_format
    if "transcription" in fields:
        changes["transcription"] = _transcription(given.transcription, default_model)
    if "noise_reduction" in fields:
        changes["noise_reduction"] = _noise(given.noise_reduction)
    if "turn_detection" in fields:
        changes["turn_detection"] = _turn_detection(given.turn_detection)
    return dataclasses.replace(current, **changes)


def is_beta_shape(session: dict[str, Any]) -> bool:
    return any(key in session for key in BETA_FLAT_KEYS)


def beta_audio_input(beta: BaseModel) -> AudioInputIn:
    """A beta session's flat input fields, in the GA `audio.input` shape."""
    fields = beta.model_fields_set
    return AudioInputIn.model_validate(
        {
            key: getattr(beta, beta_key)
            for key, beta_key in (
                ("transcription", "input_audio_transcription"),
                ("noise_reduction", "input_audio_noise_reduction"),
                ("turn_detection", "turn_detection"),
            )
            if beta_key in fields
        }
    )


def parse_transcription_update(
    current: TranscriptionSessionConfig, session: Any, default_model: str, *, param: str = "session"
) -> TranscriptionSessionConfig:
    """Apply a `session.update` / `transcription_session.update` body, in either wire shape."""
    if not isinstance(session, dict):
        raise ClientEventError(f"'{param}' must be an object.", param=param)
    try:
        if is_beta_shape(session):
            beta = BetaTranscriptionIn.model_validate(session)
            fields = beta.model_fields_set
            audio_input = beta_audio_input(beta)
            has_include = "include" in fields
            given_include = beta.include
            new_input = apply_input_patch(
                current.input,
                audio_input,
                default_model,
                beta_format=beta.input_audio_format if "input_audio_format" in fields else None,
            )
        else:
            ga = GATranscriptionIn.model_validate(session)
            has_include = "include" in ga.model_fields_set
            given_include = ga.include
            audio_input = ga.audio.input if ga.audio is not None and ga.audio.input is not None else AudioInputIn()
            new_input = apply_input_patch(current.input, audio_input, default_model)
    except ValidationError as exc:
        raise from_validation(exc, param) from exc
    include = current.include
    if has_include:
        include = tuple(given_include) if given_include is not None else None
    return TranscriptionSessionConfig(new_input, include)


# --- rendering -----------------------------------------------------------------------------------


def render_turn_detection(turn: TurnDetection | None, *, conversation: bool = False) -> dict[str, Any] | None:
    if turn is None:
        return None
    if turn.type == "semantic_vad":
        out: dict[str, Any] = {"type": "semantic_vad", "eagerness": turn.eagerness or "auto"}
    else:
        out = {
            "type": "server_vad",
            "threshold": turn.threshold,
            "prefix_padding_ms": turn.prefix_padding_ms,
            "silence_duration_ms": turn.silence_duration_ms,
        }
        if conversation:
            out["idle_timeout_ms"] = turn.idle_timeout_ms
    if conversation:
        out["create_response"] = True if turn.create_response is None else turn.create_response
        out["interrupt_response"] = True if turn.interrupt_response is None else turn.interrupt_response
    return out


def render_transcription(value: InputTranscription | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"model": value.model, "language": value.language, "prompt": value.prompt or "", **dict(value.extra)}


def render_ga_format(fmt: str) -> dict[str, Any]:
    ga = BETA_FORMATS[fmt]
    return {"type": ga, "rate": 24000} if ga == "audio/pcm" else {"type": ga}


def render_noise(value: NoiseReduction | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"type": value.type} | ({"strength": value.strength} if value.strength is not None else {})


def render_ga_input(config: InputAudioConfig) -> dict[str, Any]:
    return {
        "format": render_ga_format(config.format),
        "transcription": render_transcription(config.transcription),
        "noise_reduction": render_noise(config.noise_reduction),
        "turn_detection": render_turn_detection(config.turn_detection),
    }


def render_ga_transcription_session(
    config: TranscriptionSessionConfig, session_id: str, expires_at: int
) -> dict[str, Any]:
    return {
        "type": "transcription",
        "object": "realtime.transcription_session",
        "id": session_id,
        "expires_at": expires_at,
        "audio": {"input": render_ga_input(config.input)},
        "include": list(config.include) if config.include is not None else None,
    }


def render_beta_transcription_session(
    config: TranscriptionSessionConfig, session_id: str, expires_at: int, client_secret: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "expires_at": expires_at,
        "modalities": ["audio", "text"],
        "input_audio_format": config.input.format,
        "input_audio_transcription": render_transcription(config.input.transcription),
        "turn_detection": render_turn_detection(config.input.turn_detection),
        "input_audio_noise_reduction": render_noise(config.input.noise_reduction),
        "include": list(config.include) if config.include is not None else [],
        "client_secret": client_secret,
    }


def token_payload(config: TranscriptionSessionConfig) -> dict[str, Any]:
    """What an ephemeral key carries: the GA session body, read back with `parse_transcription_update`."""
    return {"type": "transcription", "audio": {"input": render_ga_input(config.input)}, "include": config.include}
