"""Chat completions with audio in and out on the embedded model (upstream: test_chat_upstream.py)."""

from __future__ import annotations

import base64
import io
import time
import wave
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.audio_tools import wav_bytes, wer
from tests.chat_tools import audio_part, delta_audio
from tests.conftest import Server

SYSTEM = {"role": "system", "content": "Answer in two short sentences."}


def _decode_wav(data: bytes) -> tuple[float, int]:
    with wave.open(io.BytesIO(data)) as reader:
        return reader.getnframes() / reader.getframerate(), reader.getframerate()


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_spoken_question_gets_an_answer(client: OpenAI, question_audio: dict[str, bytes], fmt: str) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-audio-preview",
        messages=[{"role": "user", "content": [audio_part(question_audio[fmt], fmt)]}],
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
                "content": [{"type": "text", "text": "Question:"}, audio_part(question_audio["wav"], "wav")],
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
            {"role": "user", "content": [audio_part(question_audio["wav"], "wav")]},
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
            {"role": "user", "content": [audio_part(question_audio["mp3"], "mp3")]},
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
            audio = delta_audio(choice.delta)
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
            model="qwen2.5-coder-0.5b",
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
        (
            {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}, "stream": True},
            "audio.format",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"n": 2}, "n"),
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
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_bad_chat_requests(server: Server, body: dict, param: str) -> None:
    """What the embedded backend and the audio decoding refuse (request shapes: test_chat_validation.py)."""
    base = {"model": "gpt-4o-audio-preview", "messages": [{"role": "user", "content": "Hi"}]}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json={**base, **body}, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_audio_that_does_not_match_or_decode(client: OpenAI, question_audio: dict[str, bytes]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview",
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "Hi"}, audio_part(question_audio["mp3"], "wav")]}
            ],
        )
    assert info.value.param == "messages[0].content[1].input_audio.format"
    broken = question_audio["wav"][:44] + b"\x00" * 0
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-audio-preview", messages=[{"role": "user", "content": [audio_part(broken, "wav")]}]
        )
    assert info.value.param == "messages[0].content[0].input_audio.data"


def test_unknown_chat_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-llm", messages=[{"role": "user", "content": "Hi"}])


@pytest.mark.parametrize("spoken", [False, True])
def test_client_leaving_a_stream_frees_the_model(server: Server, spoken: bool) -> None:
    body: dict[str, Any] = {
        "model": "qwen2.5-coder-0.5b",
        "messages": [{"role": "user", "content": "Tell me about the history of the bicycle."}],
        "max_tokens": 400,
        "stream": True,
    }
    if spoken:
        body |= {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert httpx.get(f"{server.base_url}/health").json()["chat"]["active"] == 1
    # 400 tokens take several seconds here; generation and synthesis stop within moments of the disconnect.
    deadline = time.monotonic() + 1.5

    def busy() -> int:
        health = httpx.get(f"{server.base_url}/health").json()
        return int(health["chat"]["active"] + health["tts"]["active"])

    while busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy() == 0
