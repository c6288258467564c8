"""The embedded chat backend: a GGUF model run in-process by llama.cpp (llama-cpp-python)."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

from voxserve.engines.admission import EngineGate, Slot
from voxserve.engines.chat_backend import ChatBody
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.errors import InvalidRequest

# Request fields llama.cpp understands, passed through as they are.
_PASSED = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty", "response_format")


class LlamaEngine:
    def __init__(self, llama: Any, name: str) -> None:
        self.llama = llama  # not thread-safe: the gate runs one generation at a time per model
        self.name = name

    @classmethod
    def load(cls, name: str, path: str, *, threads: int = 0, context: int = 4096) -> LlamaEngine:
        from llama_cpp import Llama

        llama = Llama(
            model_path=path,
            n_ctx=context,
            n_threads=threads or os.cpu_count() or 1,
            verbose=False,
        )
        return cls(llama, name)


def llama_arguments(body: ChatBody) -> dict[str, Any]:
    """OpenAI request fields to llama-cpp-python's create_chat_completion arguments."""
    if body.get("tools") or body.get("functions"):
        raise InvalidRequest(
            "The embedded model does not support tools; set VOXSERVE_CHAT_UPSTREAM_URL to a server that does.",
            param="tools",
            code="unsupported_value",
        )
    if body.get("n", 1) != 1:
        raise InvalidRequest("The embedded model supports n=1 only.", param="n", code="unsupported_value")
    args: dict[str, Any] = {key: body[key] for key in _PASSED if body.get(key) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        args["max_tokens"] = max_tokens
    return args


class EmbeddedChat:
    name = "embedded"

    def __init__(self, registry: ModelRegistry, gate: EngineGate) -> None:
        self.registry = registry
        self.gate = gate

    def resolve(self, model: str) -> ModelSpec:
        return self.registry.resolve(model, kind="chat")

    def _complete(self, spec: ModelSpec, messages: list[dict[str, Any]], args: dict[str, Any]) -> ChatBody:
        with self.registry.lease(spec) as engine:
            result: ChatBody = engine.llama.create_chat_completion(messages=messages, **args)
            return result

    async def complete(self, body: ChatBody) -> ChatBody:
        spec = self.resolve(body["model"])
        args = llama_arguments(body)
        async with self.gate.slot() as slot:
            return await slot.run(self._complete, spec, body["messages"], args)

    async def open_stream(self, body: ChatBody) -> AsyncIterator[ChatBody]:
        spec = self.resolve(body["model"])
        args = llama_arguments(body)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        slot = await self.gate.acquire()
        with slot.released_on_error():
            engine: LlamaEngine = await slot.run(slot.leases.enter_context, self.registry.lease(spec))
            # Formatting the prompt runs the model's Jinja chat template: on the gate's thread too.
            chunks = await slot.run(
                functools.partial(engine.llama.create_chat_completion, messages=body["messages"], stream=True, **args)
            )
        return self._pump(engine, chunks, slot, include_usage)

    async def _pump(
        self, engine: LlamaEngine, chunks: Iterator[ChatBody], slot: Slot, usage: bool
    ) -> AsyncIterator[ChatBody]:
        # Each step generates one token on the gate's thread; the loop stays free between tokens.
        completion_tokens = 0
        last: ChatBody | None = None
        try:
            while (chunk := await slot.run(next, chunks, None)) is not None:
                delta = chunk["choices"][0].get("delta", {}) if chunk.get("choices") else {}
                if delta.get("content"):
                    completion_tokens += 1
                last = chunk
                yield chunk
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
