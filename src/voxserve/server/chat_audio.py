"""Chat completions with audio out: the answer's speech, whole or streamed sentence by sentence."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from voxserve.engines.chat_backend import ChatBody
from voxserve.engines.text_to_speech import VoiceEntry
from voxserve.engines.voice_chat import VoiceChat, split_sentences
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


_TEXT_DONE = object()
_AUDIO_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def spoken_stream(
    chunks: AsyncIterator[ChatBody],
    *,
    voice_chat: VoiceChat,
    voice: VoiceEntry,
    template: ChatBody,
    seconds_in: float,
    include_usage: bool,
) -> AsyncIterator[ChatBody | str]:
    """Text deltas become `delta.audio.transcript`; each finished sentence is spoken while the model
    keeps generating, and its PCM16 goes out as `delta.audio.data` in whole 3-byte base64 groups."""
    answer_id = voice_chat.answers.new_id()
    out: asyncio.Queue[Any] = asyncio.Queue()
    sentences: asyncio.Queue[str | None] = asyncio.Queue()
    state: dict[str, Any] = {"finish": "stop", "usage": None, "text": "", "seconds": 0.0, "spoken": False}
    # Generation pauses while the first piece is spoken: on a small machine the model racing ahead
    # (it is far faster than speech) only slows that synthesis, and so the first audio.
    first_audio = asyncio.Event()

    async def text_side() -> None:
        buffer = ""
        first = True
        try:
            async for chunk in chunks:
                if chunk.get("usage"):
                    state["usage"] = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    text = delta.get("content")
                    if text:
                        audio: dict[str, Any] = {"transcript": text}
                        if first:
                            audio["id"] = answer_id
                            first = False
                        await out.put(_chunk(template, {"content": None, "audio": audio}))
                        state["text"] += text
                        buffer += text
                        done, buffer = split_sentences(buffer, first_clause=not state["spoken"])
                        for sentence in done:
                            state["spoken"] = True
                            await sentences.put(sentence)
                        if done and not first_audio.is_set():
                            await first_audio.wait()
                    if choice.get("finish_reason"):
                        state["finish"] = choice["finish_reason"]
            if buffer.strip():
                await sentences.put(buffer.strip())
        except BaseException as exc:
            await out.put(_Failed(exc))
        finally:
            await sentences.put(None)
            await out.put(_TEXT_DONE)

    async def audio_side() -> None:
        carry = b""
        first = True
        try:
            while (sentence := await sentences.get()) is not None:
                pcm, seconds = await voice_chat.speak(sentence, voice, "pcm")
                state["seconds"] += seconds
                carry += pcm
                whole = len(carry) - len(carry) % 3
                if whole:
                    audio: dict[str, Any] = {"data": base64.b64encode(carry[:whole]).decode()}
                    if first:
                        audio["id"] = answer_id
                        first = False
                    carry = carry[whole:]
                    await out.put(_chunk(template, {"audio": audio}))
                first_audio.set()
            if carry:
                await out.put(_chunk(template, {"audio": {"data": base64.b64encode(carry).decode()}}))
        except BaseException as exc:
            await out.put(_Failed(exc))
        finally:
            first_audio.set()
            await out.put(_AUDIO_DONE)

    yield _chunk(template, {"role": "assistant", "refusal": None})
    tasks = [asyncio.create_task(text_side()), asyncio.create_task(audio_side())]
    try:
        finished = 0
        while finished < 2:
            item = await out.get()
            if item is _TEXT_DONE or item is _AUDIO_DONE:
                finished += 1
            elif isinstance(item, _Failed):
                raise item.error
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await _close(chunks)
    answer = voice_chat.answers.remember(answer_id, state["text"])
    yield _chunk(template, {"audio": {"id": answer_id, "expires_at": answer.expires_at}})
    yield _chunk(template, {}, state["finish"])
    if include_usage:
        usage = add_audio_usage(state["usage"], seconds_in, state["seconds"])
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
