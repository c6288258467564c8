"""The chat completions request, validated as OpenAI validates it, before anything runs or streams.

Every violation is a 400 whose `param` names the place (`messages[2].content[0].text`). Only what the
API defines is checked; fields this server does not know are kept, so an upstream backend receives the
body as the client sent it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voxserve.errors import InvalidRequest
from voxserve.server.errors import invalid_from_validation

# Chat's `audio.format` names.
OutputAudioFormat = Literal["wav", "mp3", "flac", "opus", "aac", "pcm16"]
Number = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    # Strict: "0.5" is not a number and true is not 1, as on OpenAI. Extra keys are kept for an upstream.
    model_config = ConfigDict(strict=True, extra="allow")


class _Part(_Strict):
    type: str


class TextPart(_Part):
    type: Literal["text"]
    text: str


class RefusalPart(_Part):
    type: Literal["refusal"]
    refusal: str


class ImageUrl(_Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Part):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_Strict):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


class FileRef(_Strict):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(_Part):
    type: Literal["file"]
    file: FileRef


_TEXT_ONLY: dict[str, type[_Part]] = {"text": TextPart}
# Which content parts each role may carry (OpenAI's ChatCompletionRequest*MessageContentPart).
_PARTS: dict[str, dict[str, type[_Part]]] = {
    "system": _TEXT_ONLY,
    "developer": _TEXT_ONLY,
    "tool": _TEXT_ONLY,
    "user": {"text": TextPart, "image_url": ImagePart, "input_audio": AudioPart, "file": FilePart},
    "assistant": {"text": TextPart, "refusal": RefusalPart},
}


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function", "custom"]
    function: FunctionCall | None = None

    @model_validator(mode="after")
    def _has_function(self) -> ToolCall:
        if self.type == "function" and self.function is None:
            raise ValueError("a tool call of type function needs `function`")
        return self


class AssistantAudio(_Strict):
    id: str


class _Message(_Strict):
    name: str | None = None


class SystemMessage(_Message):
    role: Literal["system", "developer"]


class UserMessage(_Message):
    role: Literal["user"]


class AssistantMessage(_Message):
    role: Literal["assistant"]
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: AssistantAudio | None = None


class ToolMessage(_Strict):
    role: Literal["tool"]
    tool_call_id: str


class FunctionMessage(_Strict):
    role: Literal["function"]
    name: str


_MESSAGES: dict[str, type[_Strict]] = {
    "system": SystemMessage,
    "developer": SystemMessage,
    "user": UserMessage,
    "assistant": AssistantMessage,
    "tool": ToolMessage,
    "function": FunctionMessage,
}


def _where(prefix: str, error: InvalidRequest) -> InvalidRequest:
    param = f"{prefix}.{error.param}" if error.param else prefix
    message = error.message.replace(f"'{error.param}'", f"'{param}'") if error.param else error.message
    return InvalidRequest(message, param=param, code=error.code)


def _validated(model: type[BaseModel], value: dict[str, Any], prefix: str) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise _where(prefix, invalid_from_validation(list(exc.errors()))) from exc
    except InvalidRequest as exc:
        raise _where(prefix, exc) from exc


def _check_content(message: dict[str, Any], role: str, where: str) -> None:
    content = message.get("content")
    if content is None:
        if role == "function":
            return
        if role == "assistant":
            # OpenAI allows an assistant turn without content only when it carries something else.
            if any(message.get(key) is not None for key in ("tool_calls", "function_call", "audio", "refusal")):
                return
            raise InvalidRequest(
                f"Invalid value for '{where}.content': an assistant message needs `content` unless it has "
                "`tool_calls`, `function_call` or `audio`.",
                param=f"{where}.content",
                code="invalid_value",
            )
        if "content" not in message:
            raise InvalidRequest(
                f"Missing required parameter: '{where}.content'.",
                param=f"{where}.content",
                code="missing_required_parameter",
            )
        raise InvalidRequest(
            f"Invalid value for '{where}.content': expected a string or an array of content parts, got null.",
            param=f"{where}.content",
            code="invalid_type",
        )
    if isinstance(content, str):
        return
    allowed = _PARTS.get(role, _TEXT_ONLY)
    if not isinstance(content, list):
        raise InvalidRequest(
            f"Invalid type for '{where}.content': expected a string or an array of content parts.",
            param=f"{where}.content",
            code="invalid_type",
        )
    if not content:
        raise InvalidRequest(
            f"Invalid '{where}.content': empty array. Expected an array with minimum length 1.",
            param=f"{where}.content",
            code="empty_array",
        )
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"Invalid type for '{at}': expected an object.", param=at, code="invalid_type")
        kind = part.get("type")
        if kind not in allowed:
            supported = ", ".join(f"'{name}'" for name in allowed)
            raise InvalidRequest(
                f"Invalid value for '{at}.type': {kind!r} is not allowed in a {role} message. "
                f"Supported values are: {supported}.",
                param=f"{at}.type",
                code="invalid_value",
            )
        _validated(allowed[kind], part, at)


def check_message(message: Any, index: int) -> None:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise InvalidRequest(f"Invalid type for '{where}': expected an object.", param=where, code="invalid_type")
    role = message.get("role")
    if role is None:
        raise InvalidRequest(
            f"Missing required parameter: '{where}.role'.", param=f"{where}.role", code="missing_required_parameter"
        )
    if role not in _MESSAGES:
        raise InvalidRequest(
            f"Invalid value for '{where}.role': {role!r}. Supported values are: 'system', 'developer', 'user', "
            "'assistant', 'tool' and 'function'.",
            param=f"{where}.role",
            code="invalid_value",
        )
    _validated(_MESSAGES[role], {k: v for k, v in message.items() if k != "content"}, where)
    _check_content(message, role, where)


def find_lone_surrogate(value: Any, path: str = "") -> str | None:
    """The place (`messages[0].content`) of the first string holding a lone UTF-16 surrogate, which
    JSON's `\\ud800` escapes can carry but no text encoding can: no model can read it, no upstream accept it."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:  # iterative: nesting as deep as the JSON parser allows must not exhaust the stack
        item, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():  # isascii is O(1) in CPython; only non-ASCII text is encoded
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return where
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and not key.isascii():
                    try:
                        key.encode("utf-8")
                    except UnicodeEncodeError:
                        return where
                stack.append((child, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


class VoiceId(_Strict):
    id: str


class AudioOutput(_Strict):
    voice: str | VoiceId
    format: OutputAudioFormat


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class JsonSchema(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs `json_schema`")
        return self


class FunctionDefinition(_Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function", "custom"]
    function: FunctionDefinition | None = None

    @model_validator(mode="after")
    def _has_function(self) -> Tool:
        if self.type == "function" and self.function is None:
            raise ValueError("a tool of type function needs `function`")
        return self


class ChatRequest(_Strict):
    model: str = Field(min_length=1)
    messages: list[Any] = Field(min_length=1)
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOutput | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Number | None = Field(None, ge=0, le=2)
    top_p: Number | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Any = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=128)
    presence_penalty: Number | None = Field(None, ge=-2, le=2)
    frequency_penalty: Number | None = Field(None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    logit_bias: dict[str, Number] | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise InvalidRequest(
                "Invalid type for 'stop': expected a string or an array of strings.", param="stop", code="invalid_type"
            )
        if len(value) > 4:
            raise InvalidRequest(
                f"Invalid 'stop': array too long. Expected an array with maximum length 4, but got an array with "
                f"length {len(value)} instead.",
                param="stop",
                code="array_above_max_length",
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise InvalidRequest(
                    f"Invalid type for 'stop[{i}]': expected a string.", param=f"stop[{i}]", code="invalid_type"
                )
        return value

    @model_validator(mode="after")
    def _whole(self) -> ChatRequest:
        for i, message in enumerate(self.messages):
            check_message(message, i)
        if self.stream_options is not None and not self.stream:
            raise InvalidRequest(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        if self.wants_audio and self.audio is None:
            raise InvalidRequest(
                "Missing required parameter: 'audio' ({voice, format}), needed when modalities includes audio.",
                param="audio",
                code="missing_required_parameter",
            )
        if self.wants_audio and self.stream and self.audio is not None and self.audio.format != "pcm16":
            raise InvalidRequest(
                "When streaming, audio.format must be pcm16.", param="audio.format", code="unsupported_value"
            )
        return self

    @property
    def wants_audio(self) -> bool:
        return "audio" in (self.modalities or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def voice(self) -> str:
        assert self.audio is not None
        voice = self.audio.voice
        return voice if isinstance(voice, str) else voice.id

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ChatRequest:
        """Validate a parsed JSON body; a violation raises InvalidRequest naming its place."""
        where = find_lone_surrogate(body)
        if where is not None:
            raise InvalidRequest(
                f"Invalid value for '{where}': the string holds a lone surrogate, which is not valid Unicode.",
                param=where or None,
                code="invalid_value",
            )
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise invalid_from_validation(list(exc.errors())) from exc
