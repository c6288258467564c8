"""The embedded chat backend: a GGUF model run in-process by llama.cpp (llama-cpp-python)."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from voxserve.config import Settings
from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.chat_backend import ChatBody
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.errors import InvalidRequest

# Request fields llama.cpp understands, passed through as they are.
_PASSED = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format")
# Chat-template tokens around each message (<|im_start|>role\n ... <|im_end|>\n is 5 in ChatML) and
# around the whole prompt (a template's default system message): generous, as they only bound.
_TOKENS_PER_MESSAGE = 16
_TOKENS_PER_PROMPT = 64


def _import_llama() -> Any:
    """llama_cpp's Llama, its OpenMP threads set to sleep rather than spin while they wait.

    llama.cpp's OpenMP build spins at every barrier (hundreds per token). When the cores are shared (a
    transcription or a synthesis beside a generation, on 2 cores) a spinning thread waits for a partner
    that is not running: measured here, 2-thread generation fell from 24 to 0.2 tokens/s under load,
    and to 5.6 tokens/s with passive waiting, which costs nothing measurable on idle cores. libgomp
    reads the variable once, when it loads; it is restored afterwards so that no other library that
    loads OpenMP later (CTranslate2 has its own copy) sees it. An operator's own setting wins."""
    previous = os.environ.get("OMP_WAIT_POLICY")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from llama_cpp import Llama
    finally:
        if previous is None:
            os.environ.pop("OMP_WAIT_POLICY", None)
    return Llama


@dataclass(frozen=True)
class Sampling:
    """What the embedded model uses where the request says nothing (VOXSERVE_CHAT_*)."""

    max_tokens: int = 1024
    # Greedy. Measured on 2 x 24 short factual questions (text and spoken), Qwen2.5-Coder-0.5B answered as
    # many or more right greedily than at 0.2 on every input (e.g. 18 vs 15 of the fresh set spoken by
    # espeak-ng), and the same request gets the same answer. The repeat penalty and max_tokens still
    # bound a greedy loop.
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    # llama.cpp's own default is 1.0 (off); small models loop without it.
    repeat_penalty: float = 1.1

    @classmethod
    def from_settings(cls, settings: Settings) -> Sampling:
        return cls(
            max_tokens=settings.chat_max_tokens,
            temperature=settings.chat_temperature,
            top_p=settings.chat_top_p,
            top_k=settings.chat_top_k,
            min_p=settings.chat_min_p,
            repeat_penalty=settings.chat_repeat_penalty,
        )


class LlamaEngine:
    def __init__(self, llama: Any, name: str) -> None:
        self.llama = llama  # not thread-safe: the gate runs one generation at a time per model
        self.name = name
        self._longest_token: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def load(cls, name: str, path: str, *, threads: int = 0, context: int = 4096) -> LlamaEngine:
        Llama = _import_llama()
        from llama_cpp import GGML_TYPE_Q8_0

        llama = Llama(
            model_path=path,
            n_ctx=context,
            n_threads=threads or os.cpu_count() or 1,
            # Memory, measured with Qwen2.5-Coder-0.5B at 4096 tokens: an 8-bit KV cache (which needs flash
            # attention) and 256-token batches keep 47 MiB less at peak than f16 and 512, at the same speed
            # and quality (72 typed questions: 58 right against 57 with an f16 cache).
            flash_attn=True,
            type_k=GGML_TYPE_Q8_0,
            type_v=GGML_TYPE_Q8_0,
            n_batch=256,
            n_ubatch=256,
            verbose=False,
        )
        return cls(llama, name)

    @property
    def context(self) -> int:
        return int(self.llama.n_ctx())

    @property
    def longest_token(self) -> int:
        """Bytes in the vocabulary's longest token: a text of N bytes is at least N / this many tokens."""
        with self._lock:
            if self._longest_token is None:
                detokenize = self.llama.detokenize
                self._longest_token = max(
                    1, max(len(detokenize([token], special=True)) for token in range(self.llama.n_vocab()))
                )
            return self._longest_token

    def count_tokens(self, texts: list[str]) -> int:
        # Tokenizing reads only the vocabulary: safe beside a generation running on the gate's thread.
        return sum(len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)) for text in texts)


def llama_arguments(body: ChatBody, sampling: Sampling | None = None) -> dict[str, Any]:
    """OpenAI request fields to llama-cpp-python's create_chat_completion arguments."""
    if body.get("tools") or body.get("functions"):
        raise InvalidRequest(
            "The embedded model does not support tools; set VOXSERVE_CHAT_UPSTREAM_URL to a server that does.",
            param="tools",
            code="unsupported_value",
        )
    if (body.get("n") or 1) != 1:
        raise InvalidRequest("The embedded model supports n=1 only.", param="n", code="unsupported_value")
    args: dict[str, Any] = {key: body[key] for key in _PASSED if body.get(key) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        args["max_tokens"] = max_tokens
    if sampling is not None:
        args.setdefault("max_tokens", sampling.max_tokens)
        args.setdefault("temperature", sampling.temperature)
        args.setdefault("top_p", sampling.top_p)
        args |= {"top_k": sampling.top_k, "min_p": sampling.min_p, "repeat_penalty": sampling.repeat_penalty}
    return args


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI messages in the shape GGUF chat templates expect: string content everywhere (an assistant
    turn that only called tools has ""), `developer` as `system`, and the legacy `function` as `tool`."""
    out = []
    for message in messages:
        role = message.get("role")
        message = {**message, "role": {"developer": "system", "function": "tool"}.get(role, role)}
        if message.get("content") is None:
            message["content"] = ""
        out.append(message)
    return out


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _too_long(context: int, tokens: int, *, at_least: bool = False) -> InvalidRequest:
    amount = f"at least {tokens}" if at_least else str(tokens)
    return InvalidRequest(
        f"This model's maximum context length is {context} tokens. However, your messages resulted in {amount} "
        "tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def _raise_context_error(exc: ValueError, context: int) -> None:
    # llama-cpp-python's own check: "Requested tokens (N) exceed context window of M".
    text = str(exc)
    if "exceed context window" in text:
        try:
            tokens = int(text.split("(", 1)[1].split(")", 1)[0])
        except (IndexError, ValueError):
            tokens = context
        raise _too_long(context, tokens) from exc


class EmbeddedChat:
    name = "embedded"

    def __init__(self, registry: ModelRegistry, gate: EngineGate, sampling: Sampling | None = None) -> None:
        self.registry = registry
        self.gate = gate
        self.sampling = sampling or Sampling()

    def resolve(self, model: str) -> ModelSpec:
        return self.registry.resolve(model, kind="chat")

    def _check_prompt(self, spec: ModelSpec, messages: list[dict[str, Any]]) -> None:
        """Refuse a prompt longer than the context before it reaches the model's only slot.

        Every token is at least one byte and at most the vocabulary's longest token, so the size in
        bytes settles the clear cases (a short chat, a 20 MB paste) without tokenizing anything; only
        prompts near the limit are tokenized, here, off the chat slot. The model's own exact check
        still runs before the first token (see `open_stream`)."""
        texts = list(_strings(messages))
        size = sum(len(t) if t.isascii() else len(t.encode("utf-8", "replace")) for t in texts)
        overhead = _TOKENS_PER_PROMPT + _TOKENS_PER_MESSAGE * len(messages)
        with self.registry.lease(spec) as engine:
            context = engine.context
            if size + overhead < context:
                return
            if size // engine.longest_token >= context:
                raise _too_long(context, size // engine.longest_token, at_least=True)
            tokens = engine.count_tokens(texts) + overhead
        if tokens >= context:
            raise _too_long(context, tokens, at_least=True)

    def _complete(self, spec: ModelSpec, messages: list[dict[str, Any]], args: dict[str, Any]) -> ChatBody:
        with self.registry.lease(spec) as engine:
            try:
                result: ChatBody = engine.llama.create_chat_completion(messages=messages, **args)
            except ValueError as exc:
                _raise_context_error(exc, engine.context)
                raise
            return result

    async def _prepare(self, body: ChatBody) -> tuple[ModelSpec, list[dict[str, Any]], dict[str, Any]]:
        spec = self.resolve(body["model"])
        args = llama_arguments(body, self.sampling)
        messages = template_messages(body["messages"])
        await asyncio.to_thread(self._check_prompt, spec, messages)
        return spec, messages, args

    async def complete(self, body: ChatBody) -> ChatBody:
        spec, messages, args = await self._prepare(body)
        async with self.gate.slot() as slot:
            return await slot.run(self._complete, spec, messages, args)

    async def open_stream(self, body: ChatBody) -> AsyncIterator[ChatBody]:
        spec, messages, args = await self._prepare(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        slot = await self.gate.acquire()
        with slot.released_on_error():
            engine: LlamaEngine = await slot.run(slot.leases.enter_context, self.registry.lease(spec))
            # Formatting the prompt runs the model's Jinja chat template: on the gate's thread too.
            chunks = await slot.run(
                functools.partial(engine.llama.create_chat_completion, messages=messages, stream=True, **args)
            )
            # The first chunk comes after the prompt is evaluated: its errors (the model's exact context
            # check) are still an ordinary error response, not an event in a stream already begun.
            try:
                first = await slot.run(next, chunks, None)
            except ValueError as exc:
                _raise_context_error(exc, engine.context)
                raise
        return self._pump(engine, first, chunks, slot, include_usage)

    async def _pump(
        self, engine: LlamaEngine, first: ChatBody | None, chunks: Iterator[ChatBody], slot: Slot, usage: bool
    ) -> AsyncIterator[ChatBody]:
        # Each step generates one token on the gate's thread; the loop stays free between tokens.
        completion_tokens = 0
        last: ChatBody | None = None
        chunk = first
        try:
            while chunk is not None:
                delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
                if delta.get("content"):
                    completion_tokens += 1
                last = chunk
                yield chunk
                chunk = await slot.run(next, chunks, None)
            if usage and last is not None:
                # llama.cpp streams no usage; its context now holds exactly prompt + completion.
                prompt_tokens = max(0, engine.llama.n_tokens - completion_tokens)
                yield {
                    "id": last.get("id"),
                    "object": "chat.completion.chunk",
                    "created": last.get("created"),
                    "model": last.get("model"),
                    "choices": [],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }
        finally:
            slot.release()  # and the model lease with it
