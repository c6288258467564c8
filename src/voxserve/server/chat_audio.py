"""Chat completions with audio out, shaped for the wire: the whole answer spoken, or the spoken-reply
pipeline's events as `chat.completion.chunk` objects."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from voxserve.engines.chat_backend import ChatBody
from voxserve.engines.spoken_answers import SpokenAnswers
from voxserve.engines.spoken_reply import AudioPiece, SpokenReply, TextDelta, ToolCallDelta
from voxserve.engines.text_to_speech import VoiceEntry
from voxserve.engines.voice_chat import VoiceChat
from voxserve.transcript import audio_tokens


def add_audio_usage(usage: dict[str, Any] | None, seconds_in: float, seconds_out: float) -> dict[str, Any] | None:
    """Audio counts one token per 100 ms, in and out, added to the backend's text tokens."""
    if not usage:
        return usage
    text_in = int(usage.get("prompt_tokens") or 0)
    text_out = int(usage.get("completion_tokens") or 0)
    audio_in = audio_tokens(seconds_in) if seconds_in else 0
    audio_out = audio_tokens(seconds_out) if seconds_out else 0
    prompt = text_in + audio_in
    completion = text_out + audio_out
    return {
        **usage,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": audio_in, "text_tokens": text_in},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": audio_out, "text_tokens": text_out},
    }


async def speak_answer(result: ChatBody, voice_chat: VoiceChat, voice: VoiceEntry, fmt: str) -> float:
    """Give each choice with text a spoken `message.audio` (content moves to its transcript).

    Returns the seconds of audio produced, for usage."""
    seconds = 0.0
    for choice in result.get("choices") or []:
        message = choice.get("message") or {}
        text = message.get("content")
        if not isinstance(text, str) or not text.strip():
            continue  # tool calls or refusals: nothing to say
        data, duration = await voice_chat.speak(text, voice, fmt)
        seconds += duration
        answer = voice_chat.answers.remember(voice_chat.answers.new_id(), text)
        message["audio"] = {
            "id": answer.id,
            "data": base64.b64encode(data).decode(),
            "expires_at": answer.expires_at,
            "transcript": text,
        }
        message["content"] = None
    return seconds


def _chunk(template: ChatBody, delta: dict[str, Any], finish_reason: str | None = None) -> ChatBody:
    return {
        "id": template["id"],
        "object": "chat.completion.chunk",
        "created": template["created"],
        "model": template["model"],
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }


async def spoken_stream(
    reply: SpokenReply,
    *,
    answers: SpokenAnswers,
    template: ChatBody,
    seconds_in: float,
    include_usage: bool,
) -> AsyncIterator[ChatBody | str]:
    """The spoken-reply pipeline's events as chat chunks: text deltas become `delta.audio.transcript`,
    speech goes out as `delta.audio.data` in whole 3-byte base64 groups (no padding mid-stream)."""
    answer_id = answers.new_id()
    carry = b""
    sent_transcript = sent_audio = False
    yield _chunk(template, {"role": "assistant", "refusal": None})
    # Closing the events (a client that left) closes the reply: generation and synthesis stop at once.
    async with contextlib.aclosing(reply.events()) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                audio: dict[str, Any] = {"transcript": event.text}
                if not sent_transcript:
                    audio["id"] = answer_id
                    sent_transcript = True
                yield _chunk(template, {"content": None, "audio": audio})
            elif isinstance(event, AudioPiece):
                carry += event.pcm
                whole = len(carry) - len(carry) % 3
                if whole:
                    audio = {"data": base64.b64encode(carry[:whole]).decode()}
                    if not sent_audio:
                        audio["id"] = answer_id
                        sent_audio = True
                    carry = carry[whole:]
                    yield _chunk(template, {"audio": audio})
            elif isinstance(event, ToolCallDelta):
                yield _chunk(template, {"tool_calls": event.tool_calls})
    if carry:
        yield _chunk(template, {"audio": {"data": base64.b64encode(carry).decode()}})
    answer = answers.remember(answer_id, reply.text)
    yield _chunk(template, {"audio": {"id": answer_id, "expires_at": answer.expires_at}})
    yield _chunk(template, {}, reply.finish_reason)
    if include_usage:
        usage = add_audio_usage(reply.usage, seconds_in, reply.audio_ms / 1000)
        yield {**_chunk(template, {}), "choices": [], "usage": usage}
    yield "[DONE]"


async def _close(chunks: AsyncIterator[ChatBody]) -> None:
    # Closing the backend's stream at once (not whenever it is garbage-collected) frees the embedded
    # model's slot, or the upstream connection, as soon as the client goes away.
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def text_stream(chunks: AsyncIterator[ChatBody], model: str, seconds_in: float) -> AsyncIterator[ChatBody | str]:
    try:
        async for chunk in chunks:
            chunk = {**chunk, "model": model}
            if chunk.get("usage"):
                chunk["usage"] = add_audio_usage(chunk["usage"], seconds_in, 0.0)
            yield chunk
    finally:
        await _close(chunks)
    yield "[DONE]"
