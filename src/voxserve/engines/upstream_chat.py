"""The upstream chat backend: any OpenAI-compatible server (Ollama, vLLM, llama.cpp server, OpenAI)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from voxserve.engines.chat_backend import ChatBody
from voxserve.errors import UpstreamError, UpstreamUnavailable


class UpstreamChat:
    name = "upstream"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model_map: dict[str, str] | None = None,
        default_model: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model_map = model_map or {}
        self.default_model = default_model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    def upstream_model(self, model: str) -> str:
        return self.model_map.get(model) or self.default_model or model

    def _request_body(self, body: ChatBody) -> ChatBody:
        return {**body, "model": self.upstream_model(body["model"])}

    def _unreachable(self, exc: Exception) -> UpstreamUnavailable:
        kind = "did not answer in time" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
        return UpstreamUnavailable(f"The chat upstream at {self.url} {kind}: {exc.__class__.__name__}: {exc}")

    @staticmethod
    def _error(status: int, raw: bytes) -> UpstreamError:
        try:
            error = json.loads(raw).get("error")
        except (ValueError, AttributeError):
            error = None
        if isinstance(error, dict):
            return UpstreamError(
                status, str(error.get("message") or "Upstream error"), error.get("type"), error.get("param"),
                error.get("code"),
            )  # fmt: skip
        text = raw.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
        return UpstreamError(status, f"Chat upstream error: {text}", None, None, None)

    async def complete(self, body: ChatBody) -> ChatBody:
        try:
            response = await self._client.post("/chat/completions", json=self._request_body(body))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise self._error(response.status_code, response.content)
        try:
            result: ChatBody = response.json()
        except ValueError as exc:
            raise UpstreamUnavailable(f"The chat upstream at {self.url} sent a body that is not JSON.") from exc
        return result

    async def open_stream(self, body: ChatBody) -> AsyncIterator[ChatBody]:
        request = self._client.build_request("POST", "/chat/completions", json=self._request_body(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raw = await response.aread()
            await response.aclose()
            raise self._error(response.status_code, raw)
        return self._events(response)

    async def _events(self, response: httpx.Response) -> AsyncIterator[ChatBody]:
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event: Any = json.loads(data)
                if isinstance(event, dict) and event.get("error"):
                    error = event["error"]
                    raise UpstreamError(502, str(error.get("message")), error.get("type"), None, error.get("code"))
                yield event
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        finally:
            await response.aclose()

    async def close(self) -> None:
        await self._client.aclose()
