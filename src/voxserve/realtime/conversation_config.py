"""Conversation session configuration (`session.type: "realtime"`): one internal form, read from and
written to both wire shapes, GA (nested `audio.input` / `audio.output`, `output_modalities`,
`max_output_tokens`) and beta (flat `voice`, `input_audio_format`, `output_audio_format`, `modalities`,
`max_response_output_tokens`).

The input side is the transcription session's (`InputAudioConfig`, patched by `apply_input_patch`).
An update carries only the fields it changes: `null` clears `turn_detection`, `""` clears
`instructions`, `[]` clears `tools`. Unknown fields are refused; valid fields that do nothing here
(`tracing`, `truncation`, `prompt`, `reasoning`, `temperature`, ...) are accepted and echoed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from voxserve.realtime.config import (
    GA_FORMATS,
    LOGPROBS,
    AudioInputIn,
    FormatIn,
    InputAudioConfig,
    NoiseReductionIn,
    TranscriptionIn,
    TurnDetectionIn,
    _Strict,
    apply_input_patch,
    beta_audio_input,
    render_ga_format,
    render_ga_input,
    render_noise,
    render_transcription,
    render_turn_detection,
)
from voxserve.realtime.errors import ClientEventError, from_validation

OUTPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")
MAX_OUTPUT_TOKENS = 4096


class FunctionToolIn(_Strict):
    type: Literal["function"] = "function"
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolChoiceFunctionIn(_Strict):
    type: Literal["function"]
    name: str


ToolChoiceIn = Literal["none", "auto", "required"] | ToolChoiceFunctionIn


class AudioOutputIn(_Strict):
    format: FormatIn | None = None
    voice: str | dict[str, Any] | None = None
    speed: float | None = Field(None, ge=0.25, le=1.5)


class ConversationAudioIn(_Strict):
    input: AudioInputIn | None = None
    output: AudioOutputIn | None = None


class _Echoed(_Strict):
    """Valid fields that change nothing here."""

    tracing: Any = None
    truncation: Any = None
    prompt: Any = None
    reasoning: Any = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    # Read-only fields a client may send back from `session.created`.
    id: str | None = None
    object: str | None = None
    expires_at: int | None = None


class GAConversationIn(_Echoed):
    type: Literal["realtime"] | None = None
    model: str | None = None
    instructions: str | None = None
    output_modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1)
    audio: ConversationAudioIn | None = None
    tools: list[FunctionToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None


class BetaConversationIn(_Echoed):
    model: str | None = None
    instructions: str | None = None
    modalities: list[Literal["text", "audio"]] | None = Field(None, min_length=1)
    voice: str | dict[str, Any] | None = None
    speed: float | None = Field(None, ge=0.25, le=1.5)
    input_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    output_audio_format: Literal["pcm16", "g711_ulaw", "g711_alaw"] | None = None
    input_audio_transcription: TranscriptionIn | None = None
    input_audio_noise_reduction: NoiseReductionIn | None = None
    turn_detection: TurnDetectionIn | None = None
    tools: list[FunctionToolIn] | None = None
    tool_choice: ToolChoiceIn | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | None = None
    client_secret: dict[str, Any] | None = None


BETA_CONVERSATION_KEYS = frozenset(
    {
        "modalities",
        "voice",
        "speed",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "input_audio_noise_reduction",
        "turn_detection",
        "max_response_output_tokens",
        "temperature",
        "client_secret",
    }
)
_ECHOED = ("tracing", "truncation", "prompt", "reasoning", "parallel_tool_calls", "temperature")


@dataclass(frozen=True)
class ConversationConfig:
    # Transcription of the user's speech is off until set, as with OpenAI (the server still transcribes
    # it for the chat model; it only sends no transcription events).
    input: InputAudioConfig = field(default_factory=InputAudioConfig)
    model: str = "gpt-realtime"
    instructions: str | None = None  # None: the server's spoken-answer default
    output_modalities: tuple[str, ...] = ("audio",)
    output_format: str = "pcm16"
    voice: str = "alloy"
    speed: float = 1.0
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] = "auto"
    max_output_tokens: int | str = "inf"
    include: tuple[str, ...] | None = None
    echoed: dict[str, Any] = field(default_factory=dict)

    @property
    def logprobs(self) -> bool:
        return LOGPROBS in (self.include or ())

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities


def _modalities(given: list[str]) -> tuple[str, ...]:
    # GA takes one of ["audio"] or ["text"]; beta's ["text", "audio"] means audio with its transcript.
    return ("audio",) if "audio" in given else ("text",)


def _voice(value: Any) -> str:
    return value if isinstance(value, str) else str(value.get("id", "alloy"))


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        raise ClientEventError(
            f"Invalid '{param}': expected an integer from 1 to {MAX_OUTPUT_TOKENS}, or 'inf'.",
            code="invalid_value",
            param=param,
        )
    return value


def _tools(value: list[FunctionToolIn] | None) -> tuple[dict[str, Any], ...]:
    return tuple(t.model_dump(exclude_none=True) for t in value or [])


def _tool_choice(value: Any) -> str | dict[str, Any]:
    if value is None:
        return "auto"
    return value if isinstance(value, str) else value.model_dump()


def parse_conversation_update(
    current: ConversationConfig, session: Any, default_stt_model: str, *, param: str = "session"
) -> ConversationConfig:
    """Apply a `session.update` body (or a key's payload, or a `response.create`'s `audio`) in either shape."""
    if not isinstance(session, dict):
        raise ClientEventError(f"'{param}' must be an object.", param=param)
    where = f"{param}." if param else ""
    changes: dict[str, Any] = {}
    try:
        if any(key in session for key in BETA_CONVERSATION_KEYS):
            beta = BetaConversationIn.model_validate(session)
            fields = beta.model_fields_set
            audio_input = beta_audio_input(beta)
            changes["input"] = apply_input_patch(
                current.input,
                audio_input,
                default_stt_model,
                beta_format=beta.input_audio_format if "input_audio_format" in fields else None,
            )
            if "modalities" in fields and beta.modalities is not None:
                changes["output_modalities"] = _modalities(beta.modalities)
            if "voice" in fields and beta.voice is not None:
                changes["voice"] = _voice(beta.voice)
            if "speed" in fields and beta.speed is not None:
                changes["speed"] = beta.speed
            if "output_audio_format" in fields and beta.output_audio_format is not None:
                changes["output_format"] = beta.output_audio_format
            if "max_response_output_tokens" in fields and beta.max_response_output_tokens is not None:
                changes["max_output_tokens"] = _max_tokens(
                    beta.max_response_output_tokens, where + "max_response_output_tokens"
                )
            parsed: GAConversationIn | BetaConversationIn = beta
        else:
            ga = GAConversationIn.model_validate(session)
            fields = ga.model_fields_set
            audio = ga.audio or ConversationAudioIn()
            if audio.input is not None:
                changes["input"] = apply_input_patch(current.input, audio.input, default_stt_model)
            output = audio.output
            if output is not None:
                if output.format is not None:
                    changes["output_format"] = GA_FORMATS[output.format.type]
                if output.voice is not None:
                    changes["voice"] = _voice(output.voice)
                if output.speed is not None:
                    changes["speed"] = output.speed
            if "output_modalities" in fields and ga.output_modalities is not None:
                changes["output_modalities"] = _modalities(ga.output_modalities)
            if "max_output_tokens" in fields and ga.max_output_tokens is not None:
                changes["max_output_tokens"] = _max_tokens(ga.max_output_tokens, where + "max_output_tokens")
            parsed = ga
    except ValidationError as exc:
        raise from_validation(exc, param) from exc
    if "model" in fields and parsed.model:
        changes["model"] = parsed.model
    if "instructions" in fields:
        changes["instructions"] = parsed.instructions or None
    if "tools" in fields:
        changes["tools"] = _tools(parsed.tools)
    if "tool_choice" in fields:
        changes["tool_choice"] = _tool_choice(parsed.tool_choice)
    if "include" in fields:
        changes["include"] = tuple(parsed.include) if parsed.include is not None else None
    echoed = {k: getattr(parsed, k) for k in _ECHOED if k in fields}
    if echoed:
        changes["echoed"] = {**current.echoed, **echoed}
    return dataclasses.replace(current, **changes)


def parse_output_audio(value: Any, param: str) -> AudioOutputIn:
    try:
        return AudioOutputIn.model_validate(value)
    except ValidationError as exc:
        raise from_validation(exc, param) from exc


# --- rendering -----------------------------------------------------------------------------------


def render_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    return choice


def render_ga_conversation_session(
    config: ConversationConfig, session_id: str, expires_at: int, instructions: str
) -> dict[str, Any]:
    audio_input = render_ga_input(config.input)
    audio_input["turn_detection"] = render_turn_detection(config.input.turn_detection, conversation=True)
    echoed = {k: v for k, v in config.echoed.items() if k in ("tracing", "truncation", "prompt", "reasoning")}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "expires_at": expires_at,
        "output_modalities": list(config.output_modalities),
        "instructions": instructions,
        "audio": {
            "input": audio_input,
            "output": {"format": render_ga_format(config.output_format), "voice": config.voice, "speed": config.speed},
        },
        "tools": [dict(t) for t in config.tools],
        "tool_choice": render_tool_choice(config.tool_choice),
        "max_output_tokens": config.max_output_tokens,
        "tracing": None,
        "prompt": None,
        "include": list(config.include) if config.include is not None else None,
        **echoed,
    }


def render_beta_conversation_session(
    config: ConversationConfig, session_id: str, expires_at: int, instructions: str, client_secret: dict[str, Any]
) -> dict[str, Any]:
    choice = config.tool_choice
    return {
        "id": session_id,
        "object": "realtime.session",
        "model": config.model,
        "expires_at": expires_at,
        "modalities": ["text", "audio"] if config.audio_out else ["text"],
        "instructions": instructions,
        "voice": config.voice,
        "input_audio_format": config.input.format,
        "output_audio_format": config.output_format,
        "input_audio_transcription": render_transcription(config.input.transcription),
        "turn_detection": render_turn_detection(config.input.turn_detection, conversation=True),
        "input_audio_noise_reduction": render_noise(config.input.noise_reduction),
        "tools": [dict(t) for t in config.tools],
        "tool_choice": choice if isinstance(choice, str) else "required",
        "temperature": config.echoed.get("temperature") or 0.8,
        "max_response_output_tokens": config.max_output_tokens,
        "speed": config.speed,
        "tracing": None,
        "client_secret": client_secret,
    }
