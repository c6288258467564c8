"""What every chat backend offers: an OpenAI chat completion, whole or as chunks.

Requests and answers are OpenAI chat-completion JSON objects (plain dicts), because that is the
common language of every backend we speak to: llama.cpp's own API, Ollama, vLLM, OpenAI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

ChatBody = dict[str, Any]


class ChatBackend(Protocol):
    name: str

    async def complete(self, body: ChatBody) -> ChatBody:
        """A `chat.completion` object for a request whose messages hold only text."""
        ...

    async def open_stream(self, body: ChatBody) -> AsyncIterator[ChatBody]:
        """Admit the request now (errors here are ordinary error responses), then return the
        `chat.completion.chunk` objects; usage comes in a last chunk with empty choices when
        `stream_options.include_usage` is set."""
        ...
