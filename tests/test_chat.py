"""Chat completions with audio in and out, on the embedded model and through an upstream server."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.audio_tools import speak, wav_bytes, wer
from tests.conftest import Server

QUESTION = "Why do people like dogs?"
# SmolLM2-135M keeps to the point when told to; without it, it may ramble off in French.
SYSTEM = {"role": "system", "content": "Answer in two short sentences."}


@pytest.fixture(scope="module")
def question_audio(client: OpenAI) -> dict[str, bytes]:
    """The question spoken by the server's own voice, as wav and mp3."""
    return {
        fmt: client.audio.speech.create(model="tts-1", voice="alloy", input=QUESTION, response_format=fmt).content
        for fmt in ("wav", "mp3")
    }


def _audio_part(data: bytes, fmt: str) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def _delta_audio(delta: Any) -> dict[str, Any]:
    """`delta.audio` as a dict: newer SDKs type it, older ones keep it in model_extra."""
    audio = getattr(delta, "audio", None) or (delta.model_extra or {}).get("audio")
    if audio is None:
        return {}
    return audio if isinstance(audio, dict) else audio.model_dump(exclude_none=True)


def _decode_wav(data: bytes) -> tuple[float, int]:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate(), reader.getframerate()


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_spoken_question_gets_an_answer(client: OpenAI, question_audio: dict[str, bytes], fmt: str) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        messages=[{"role": "user", "content": [_audio_part(question_audio[fmt], fmt)]}],
        max_tokens=40,
        temperature=0,
    )
    message = completion.choices[0].message
    assert message.content and message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.audio_tokens and usage.prompt_tokens_details.audio_tokens > 10


def test_audio_answer_and_second_turn(client: OpenAI, question_audio: dict[str, bytes]) -> None:
    first = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "wav"},
        messages=[
            SYSTEM,
            {
                "role": "user",
                "content": [{"type": "text", "text": "Question:"}, _audio_part(question_audio["wav"], "wav")],
            },
        ],
        max_tokens=60,
        temperature=0,
    )
    message = first.choices[0].message
    assert message.content is None
    audio = message.audio
    assert audio is not None and audio.id.startswith("audio_") and audio.transcript.strip()
    assert audio.expires_at > time.time() + 3000
    data = base64.b64decode(audio.data)
    duration, rate = _decode_wav(data)
    assert rate == 24000 and duration > 0.5
    heard = client.audio.transcriptions.create(model="whisper-base", file=("answer.wav", data)).text
    assert wer(audio.transcript, heard) <= 0.20, (audio.transcript, heard)
    usage = first.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.audio_tokens and usage.completion_tokens_details.audio_tokens > 5

    second = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        modalities=["text", "audio"],
        audio={"voice": "echo", "format": "mp3"},
        messages=[
            {"role": "user", "content": [_audio_part(question_audio["wav"], "wav")]},
            {"role": "assistant", "audio": {"id": audio.id}},
            {"role": "user", "content": "Say that again."},
        ],
        max_tokens=30,
        temperature=0,
    )
    assert second.choices[0].message.audio is not None
    assert base64.b64decode(second.choices[0].message.audio.data)[:3] in (b"ID3", b"\xff\xf3", b"\xff\xfb")


def test_unknown_audio_id_is_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview",
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "audio": {"id": "audio_doesnotexist"}},
                {"role": "user", "content": "Again"},
            ],
        )
    assert info.value.param == "messages[1].audio.id"


def test_streaming_with_audio(client: OpenAI, question_audio: dict[str, bytes]) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        messages=[
            SYSTEM,
            {"role": "user", "content": [_audio_part(question_audio["mp3"], "mp3")]},
        ],
        max_tokens=60,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    transcript, pcm, ids, finish, usage, expires = [], b"", set(), None, None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            audio = _delta_audio(choice.delta)
            if audio:
                ids.add(audio.get("id"))
                if "transcript" in audio:
                    transcript.append(audio["transcript"])
                if "data" in audio:
                    assert "=" not in audio["data"][:-2], "padding in the middle of the stream"
                    pcm += base64.b64decode(audio["data"])
                if "expires_at" in audio:
                    expires = audio["expires_at"]
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(transcript)
    assert text.strip() and finish in ("stop", "length") and expires
    assert len(ids - {None}) == 1
    assert len(pcm) % 2 == 0 and len(pcm) / 2 / 24000 > 0.5
    assert usage is not None and usage.total_tokens > 0
    heard = client.audio.transcriptions.create(model="whisper-base", file=("a.wav", wav_bytes(
        __import__("numpy").frombuffer(pcm, "<i2").astype("float32") / 32768, 24000))).text  # fmt: skip
    assert wer(text, heard) <= 0.25, (text, heard)


def test_text_chat_streams_with_usage(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"modalities": ["text", "audio"]}, "audio"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "ogg"}}, "audio.format"),
        ({"modalities": ["text", "audio"], "audio": {"voice": "nobody", "format": "wav"}}, "audio.voice"),
        (
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}, "stream": True},
            "audio.format",
        ),
        ({"modalities": ["video"]}, "modalities"),
        ({"messages": []}, "messages"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}],
                    }
                ]
            },
            "messages[0].content[0].input_audio.data",
        ),
    ],
)
def test_bad_chat_requests(server: Server, body: dict, param: str) -> None:
    base = {"model": "gpt-4o-audio-preview", "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json={**base, **body}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_audio_that_does_not_match_or_decode(client: OpenAI, question_audio: dict[str, bytes]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, _audio_part(question_audio["mp3"], "wav")]}
            ],
        )
    assert info.value.param == "messages[0].content[1].input_audio.format"
    broken = question_audio["wav"][:44] + b"\x00" * 0
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview", messages=[{"role": "user", "content": [_audio_part(broken, "wav")]}]
        )
    assert info.value.param == "messages[0].content[0].input_audio.data"


def test_unknown_chat_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-llm", messages=[{"role": "user", "content": "Hi"}])


# --- upstream ------------------------------------------------------------------------------------


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
        messages=[{"role": "user", "content": [_audio_part(question_audio["wav"], "wav")]}],
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
                "content": [{"type": "text", "text": "Question:"}, _audio_part(wav_bytes(spoken, rate), "wav")],
            },
        ],
        tools=tools,  # type: ignore[arg-type]
        **params,  # type: ignore[arg-type]
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
    pieces = [_delta_audio(c.choices[0].delta) for c in spoken if c.choices]
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
