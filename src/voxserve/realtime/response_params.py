"""What a client's `response.create` asks for beyond the session's config: in or out of the
conversation, the per-response config (instructions, tools, modalities, voice, limits), its metadata,
and out-of-band input items."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxserve.realtime.conversation_config import ConversationConfig, parse_conversation_update, parse_output_audio
from voxserve.realtime.conversation_items import parse_client_item
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.response_state import Response

MAX_METADATA = 16
KNOWN_PARAMS = {
    "instructions", "output_modalities", "modalities", "conversation", "input", "tools", "tool_choice",
    "metadata", "audio", "voice", "output_audio_format", "max_output_tokens", "max_response_output_tokens",
    "temperature", "prompt", "tracing",
}  # fmt: skip


@dataclass
class ResponseRequest:
    in_conversation: bool
    config: ConversationConfig
    metadata: dict[str, str] | None
    input_items: list[dict[str, Any]] | None

    def response(self, response_id: str, default_instructions: str) -> Response:
        config = self.config
        return Response(
            id=response_id,
            in_conversation=self.in_conversation,
            modalities=config.output_modalities,
            output_format=config.output_format,
            voice=config.voice,
            speed=config.speed,
            max_output_tokens=config.max_output_tokens,
            metadata=self.metadata,
            instructions=config.instructions or default_instructions,
            tools=config.tools,
            tool_choice=config.tool_choice,
            input_items=self.input_items,
        )


def parse_response_request(
    params: dict[str, Any],
    config: ConversationConfig,
    default_stt_model: str,
    *,
    active_id: str | None,
    check_voice: Callable[[str, str], None],
    find_item: Callable[[str], dict[str, Any] | None],
    new_id: Callable[[str], str],
    decode_audio: Callable[[Any, str], np.ndarray],
) -> ResponseRequest:
    """`response.create`'s parameters over the session's `config`; `active_id`: the conversation's
    response in progress, if any (a second one in the conversation is refused)."""
    conversation = params.get("conversation", "auto")
    if conversation not in ("auto", "none"):
        raise ClientEventError("'response.conversation' must be 'auto' or 'none'.", param="response.conversation")
    in_conversation = conversation == "auto"
    if in_conversation and active_id is not None:
        raise ClientEventError(
            f"Conversation already has an active response in progress: {active_id}. Wait until the "
            "response is finished before creating a new one.",
            code="conversation_already_has_active_response",
            param=None,
        )
    config = response_config(params, config, default_stt_model, check_voice)
    metadata = response_metadata(params)
    input_items = None
    if "input" in params:
        input_items = response_input(params["input"], find_item=find_item, new_id=new_id, decode_audio=decode_audio)
    return ResponseRequest(in_conversation, config, metadata, input_items)


def response_config(
    params: dict[str, Any], config: ConversationConfig, default_stt_model: str, check_voice: Callable[[str, str], None]
) -> ConversationConfig:
    """The session's `config` with the response's own settings over it."""
    for key in params:
        if key not in KNOWN_PARAMS:
            raise ClientEventError(f"Unknown parameter: 'response.{key}'.", code="unknown_parameter",
                                   param=f"response.{key}")  # fmt: skip
    update: dict[str, Any] = {}
    for key in ("instructions", "tools", "tool_choice", "output_modalities", "max_output_tokens"):
        if key in params:
            update[key] = params[key]
    for beta_key in ("modalities", "voice", "output_audio_format", "max_response_output_tokens", "temperature"):
        if beta_key in params:
            update[beta_key] = params[beta_key]
    audio = params.get("audio")
    if audio is not None:
        if not isinstance(audio, dict) or set(audio) - {"output"}:
            raise ClientEventError("'response.audio' holds only 'output'.", param="response.audio")
        if audio.get("output") is not None:
            parse_output_audio(audio["output"], "response.audio.output")
            update["audio"] = {"output": audio["output"]}
    instructions = config.instructions
    if update:
        per = parse_conversation_update(
            dataclasses.replace(config, instructions=None), update, default_stt_model, param="response"
        )
        if "instructions" in update:
            instructions = per.instructions
        config = dataclasses.replace(per, instructions=instructions)
        check_voice(config.voice, "response.audio.output.voice")
    return config


def response_metadata(params: dict[str, Any]) -> dict[str, str] | None:
    metadata = params.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > MAX_METADATA
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items()
        )
    ):
        raise ClientEventError(
            f"'response.metadata' must map at most {MAX_METADATA} string keys (64 characters) to strings"
            " (512 characters).",
            param="response.metadata",
        )
    return metadata


def response_input(
    value: Any,
    *,
    find_item: Callable[[str], dict[str, Any] | None],
    new_id: Callable[[str], str],
    decode_audio: Callable[[Any, str], np.ndarray],
) -> list[dict[str, Any]]:
    """An out-of-band response's own input: new items, or references to the conversation's."""
    if not isinstance(value, list):
        raise ClientEventError("'response.input' must be an array of items.", param="response.input")
    items = []
    for index, raw in enumerate(value):
        where = f"response.input[{index}]"
        if not isinstance(raw, dict):
            raise ClientEventError("Each input item must be an object.", param=where)
        if raw.get("type") == "item_reference":
            found = find_item(str(raw.get("id")))
            if found is None:
                raise ClientEventError(f"Item with id '{str(raw.get('id'))[:100]}' not found.",
                                       code="item_not_found", param=f"{where}.id")  # fmt: skip
            items.append(found)
            continue
        item, audio = parse_client_item(raw, where, new_id=new_id, decode_audio=decode_audio)
        if audio is not None:
            raise ClientEventError(
                "Out-of-band input audio needs its 'transcript' here; send audio through the input buffer.",
                param=f"{where}.content",
            )
        items.append(item)
    return items
