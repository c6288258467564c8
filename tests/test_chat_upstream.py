"""Chat completions through an upstream OpenAI-compatible server: what is forwarded and what comes back."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from tests.audio_tools import speak, wav_bytes, wer
from tests.chat_tools import audio_part, delta_audio
from tests.conftest import Server


def test_upstream_is_a_real_openai_compatible_server(
    start_server: Callable[..., Server], server: Server, question_audio: dict[str, bytes]
) -> None:
    front = start_server(
        {"VOXSERVE_CHAT_UPSTREAM_URL": f"{server.base_url}/v1", "VOXSERVE_CHAT_UPSTREAM_MODEL": "smollm2-135m"}
    )
    client = front.client()
    completion = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        messages=[{"role": "user", "content": [audio_part(question_audio["wav"], "wav")]}],
        max_tokens=30,
        temperature=0,
    )
    assert completion.choices[0].message.audio is not None
    assert completion.choices[0].message.audio.transcript.strip()
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="anything", messages=[{"role": "user", "content": "Say hello."}], max_tokens=10, stream=True
        )
        if c.choices
    )
    assert text.strip()


class _Recorder:
    """A minimal OpenAI-compatible upstream that records what it is sent and answers with tool calls."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                if body["model"] == "refuse-me":
                    self._send(429, {"error": {"message": "slow down", "type": "requests", "param": None,
                                               "code": "rate_limit_exceeded"}})  # fmt: skip
                    return
                message: dict[str, Any] = {"role": "assistant", "content": "Sunny and warm."}
                finish = "stop"
                if body.get("tools"):
                    message = {"role": "assistant", "content": None, "tool_calls": [{
                        "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}  # fmt: skip
                    finish = "tool_calls"
                base = {"id": "chatcmpl-up", "created": 1, "model": body["model"]}
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for piece in ["Sunny", " and", " warm."]:
                        chunk = {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())  # fmt: skip
                    end = {**base, "object": "chat.completion.chunk",
                           "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
                    self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
                    return
                self._send(200, {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})  # fmt: skip

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder()
    yield rec
    rec.httpd.shutdown()


@pytest.fixture(scope="module")
def recorded_front(start_server: Callable[..., Server], recorder: _Recorder) -> Server:
    return start_server(
        {
            "VOXSERVE_CHAT_UPSTREAM_URL": recorder.url,
            "VOXSERVE_CHAT_UPSTREAM_API_KEY": "sk-upstream",
            "VOXSERVE_CHAT_UPSTREAM_MODEL_MAP": json.dumps({"gpt-4o-audio-preview": "llama3.2"}),
        }
    )


def test_upstream_receives_transcripts_and_untouched_parameters(recorded_front: Server, recorder: _Recorder) -> None:
    spoken, rate = speak("What is the weather like in Paris?")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    params = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": ["\n\n"], "seed": 7,
              "response_format": {"type": "text"}, "n": 1, "user": "tester", "tool_choice": "auto"}  # fmt: skip
    completion = recorded_front.client().chat.completions.create(
        model="gpt-4o-audio-preview",
        messages=[
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Question:"}, audio_part(wav_bytes(spoken, rate), "wav")],
            },
        ],
        tools=tools,  # type: ignore[arg-type]
        **params,  # type: ignore[arg-type]
        # Fields this server does not know (a provider's extensions, newer API fields) go upstream as sent.
        extra_body={"top_k": 20, "provider_extension": {"mode": ["a", 1.5]}, "metadata": {"team": "voice"}},
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"
    sent = recorder.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-upstream"
    body = sent["body"]
    assert body["model"] == "llama3.2"
    assert body["tools"] == tools
    for key, value in params.items():
        assert body[key] == value, key
    assert body["top_k"] == 20 and body["provider_extension"] == {"mode": ["a", 1.5]}
    assert body["metadata"] == {"team": "voice"}
    assert "modalities" not in body and "audio" not in body
    parts = body["messages"][1]["content"]
    assert parts[0] == {"type": "text", "text": "Question:"}
    assert parts[1]["type"] == "text" and wer("What is the weather like in Paris?", parts[1]["text"]) <= 0.2
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}


def test_upstream_streaming_and_errors(recorded_front: Server, recorder: _Recorder) -> None:
    client = recorded_front.client()
    chunks = list(
        client.chat.completions.create(
            model="other-model", messages=[{"role": "user", "content": "Weather?"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Sunny and warm."
    assert recorder.requests[-1]["body"]["model"] == "other-model" and recorder.requests[-1]["body"]["stream"]
    spoken = client.chat.completions.create(
        model="other-model", messages=[{"role": "user", "content": "Weather?"}], stream=True,
        modalities=["text", "audio"], audio={"voice": "alloy", "format": "pcm16"},
    )  # fmt: skip
    pieces = [delta_audio(c.choices[0].delta) for c in spoken if c.choices]
    assert "".join(p.get("transcript", "") for p in pieces) == "Sunny and warm."
    assert sum(len(base64.b64decode(p["data"])) for p in pieces if "data" in p) > 24000
    with pytest.raises(openai.RateLimitError) as info:
        client.with_options(max_retries=0).chat.completions.create(
            model="refuse-me", messages=[{"role": "user", "content": "Hi"}]
        )
    assert "slow down" in info.value.message and info.value.code == "rate_limit_exceeded"


def test_unreachable_upstream_is_502_within_the_timeout(start_server: Callable[..., Server]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        for url in (f"http://127.0.0.1:{refused_port}/v1", f"http://127.0.0.1:{silent.getsockname()[1]}/v1"):
            front = start_server({"VOXSERVE_CHAT_UPSTREAM_URL": url, "VOXSERVE_CHAT_UPSTREAM_TIMEOUT": "2"})
            started = time.monotonic()
            response = httpx.post(
                f"{front.base_url}/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]},
                timeout=30,
            )
            assert response.status_code == 502, response.text
            assert time.monotonic() - started < 6
            assert "upstream" in response.json()["error"]["message"]
            front.stop()
    finally:
        silent.close()
