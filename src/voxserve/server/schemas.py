"""Request models for the audio endpoints, validated with pydantic (errors become 400s with `param`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from voxserve.engines.whisper import VadSettings
from voxserve.errors import InvalidRequest

TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class ServerVad(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["server_vad"]
    prefix_padding_ms: int = Field(300, ge=0, le=10_000)
    silence_duration_ms: int = Field(200, ge=0, le=10_000)
    threshold: float = Field(0.5, ge=0.0, le=1.0)

    def to_settings(self) -> VadSettings:
        return VadSettings(self.threshold, self.prefix_padding_ms, self.silence_duration_ms)


class TranslationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    prompt: str | None = None
    response_format: TranscriptFormat = "json"
    temperature: float = Field(0.0, ge=0.0, le=1.0)


class TranscriptionRequest(TranslationRequest):
    language: str | None = None
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    include: list[Literal["logprobs"]] = Field(default_factory=list)
    stream: bool = False
    chunking_strategy: Literal["auto"] | ServerVad | None = None

    @field_validator("chunking_strategy", mode="before")
    @classmethod
    def _strategy(cls, value: object) -> object:
        # Checked by hand so an error names `chunking_strategy.<field>`, not pydantic's union branch.
        if value is None or value == "auto" or isinstance(value, ServerVad):
            return value
        if isinstance(value, dict):
            try:
                return ServerVad.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise InvalidRequest(
                    f"Invalid chunking_strategy: {where}: {first['msg']}.",
                    param=f"chunking_strategy.{where}" if where else "chunking_strategy",
                    code="invalid_value",
                ) from exc
        raise InvalidRequest(
            "chunking_strategy must be `auto` or an object with type `server_vad`.",
            param="chunking_strategy",
            code="invalid_value",
        )

    @model_validator(mode="after")
    def _compatible(self) -> TranscriptionRequest:
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise InvalidRequest(
                "timestamp_granularities requires response_format=verbose_json.",
                param="timestamp_granularities",
                code="unsupported_value",
            )
        if self.include and self.response_format != "json":
            raise InvalidRequest(
                "include[]=logprobs is only available with response_format=json.",
                param="include",
                code="unsupported_value",
            )
        if self.stream and self.response_format not in ("json", "text"):
            raise InvalidRequest(
                f"stream=true sends transcript.text events and is not compatible with response_format "
                f"'{self.response_format}'. Use 'json' or 'text' instead.",
                param="stream",
                code="unsupported_value",
            )
        if self.language is not None:
            self.language = self.language.strip().lower() or None
        return self

    @property
    def logprobs(self) -> bool:
        return "logprobs" in self.include

    @property
    def words(self) -> bool:
        return "word" in self.timestamp_granularities

    @property
    def segments(self) -> bool:
        return not self.timestamp_granularities or "segment" in self.timestamp_granularities
