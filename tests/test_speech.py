"""Text to speech through the official openai SDK against a real server with the bundled Piper voice."""

from __future__ import annotations

import base64
import io
import json
import shutil
import struct
import time
import wave
from collections.abc import Callable

import av
import httpx
import openai
import pytest
from openai import OpenAI

from tests.audio_tools import SENTENCES, wer
from tests.conftest import Server

SIX = (
    "The morning train leaves the station at seven sharp. Passengers should arrive a few minutes early. "
    "Tickets can be bought from the machines near the entrance. The café on platform two sells hot drinks. "
    "Please keep your luggage with you at all times. We wish you a pleasant journey today."
)


def _decode(data: bytes) -> tuple[float, int]:
    """Duration in seconds and sample rate of an encoded file, by decoding every frame with PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate, stream.rate


def _speech(server: Server, body: dict, timeout: float = 120) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/audio/speech", json=body, timeout=timeout)


@pytest.fixture(scope="module")
def pcm_reference(client: OpenAI) -> bytes:
    return client.audio.speech.create(model="tts-1", voice="alloy", input=SIX, response_format="pcm").content


def test_every_format_decodes_to_the_right_duration(client: OpenAI, pcm_reference: bytes) -> None:
    expected = len(pcm_reference) / 2 / 24000
    assert expected > 8
    for fmt, rates in [("mp3", {24000}), ("opus", {48000, 24000}), ("aac", {24000}), ("flac", {24000}),
                       ("wav", {24000})]:  # fmt: skip
        data = client.audio.speech.create(model="tts-1", voice="alloy", input=SIX, response_format=fmt).content
        duration, rate = _decode(data)
        assert rate in rates, (fmt, rate)
        assert abs(duration - expected) / expected <= 0.05, (fmt, duration, expected)


def test_content_types(server: Server) -> None:
    for fmt, media in [("mp3", "audio/mpeg"), ("opus", "audio/opus"), ("aac", "audio/aac"),
                       ("flac", "audio/flac"), ("wav", "audio/wav"), ("pcm", "audio/pcm")]:  # fmt: skip
        response = _speech(server, {"model": "tts-1", "voice": "echo", "input": "Hi.", "response_format": fmt})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(media)
        assert response.headers.get("transfer-encoding") == "chunked"


def test_containers_are_what_they_claim(client: OpenAI) -> None:
    def make(fmt: str) -> bytes:
        return client.audio.speech.create(model="tts-1", voice="nova", input="Hello.", response_format=fmt).content

    assert make("opus")[:4] == b"OggS"
    assert make("flac")[:4] == b"fLaC"
    assert make("wav")[:4] == b"RIFF"
    aac = make("aac")
    assert aac[0] == 0xFF and aac[1] & 0xF0 == 0xF0  # ADTS sync word
    mp3 = make("mp3")
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)


def test_unstreamed_wav_and_flac_carry_true_lengths(server: Server, pcm_reference: bytes) -> None:
    frames = len(pcm_reference) // 2
    body = {"model": "tts-1", "voice": "alloy", "input": SIX, "stream": False}
    wav_bytes = _speech(server, {**body, "response_format": "wav"}).content
    assert wav_bytes[36:40] == b"data", "the plain 44-byte header that naive readers assume"
    with wave.open(io.BytesIO(wav_bytes)) as reader:
        assert reader.getframerate() == 24000 and reader.getnchannels() == 1 and reader.getsampwidth() == 2
        assert abs(reader.getnframes() - frames) / frames <= 0.05
        assert len(reader.readframes(reader.getnframes())) == reader.getnframes() * 2
    flac = _speech(server, {**body, "response_format": "flac"}).content
    # STREAMINFO: 36 bits of total samples at bytes 21..26 after the 4-byte marker and 4-byte block header.
    info = flac[8 : 8 + 34]
    total = (struct.unpack(">Q", info[10:18])[0]) & ((1 << 36) - 1)
    assert abs(total - frames) / frames <= 0.05


def test_round_trip_through_whisper(client: OpenAI) -> None:
    text = " ".join(SENTENCES)
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav").content
    heard = client.audio.transcriptions.create(model="whisper-base", file=("speech.wav", audio)).text
    assert wer(text, heard) <= 0.10, heard


def test_speed_changes_length(client: OpenAI) -> None:
    def seconds(speed: float) -> float:
        pcm = client.audio.speech.create(
            model="tts-1", voice="alloy", input=SENTENCES[3], response_format="pcm", speed=speed
        ).content
        return len(pcm) / 2 / 24000

    normal, fast, slow = seconds(1.0), seconds(2.0), seconds(0.5)
    assert fast <= 0.6 * normal
    assert slow >= 1.6 * normal


def test_first_chunk_arrives_early(server: Server) -> None:
    for fmt in ("mp3", "pcm", "opus"):
        started = time.monotonic()
        first = None
        with httpx.stream(
            "POST", f"{server.base_url}/v1/audio/speech", timeout=120,
            json={"model": "tts-1", "voice": "alloy", "input": SIX, "response_format": fmt},
        ) as response:  # fmt: skip
            assert response.status_code == 200
            for chunk in response.iter_raw():
                if chunk and first is None:
                    first = time.monotonic() - started
        total = time.monotonic() - started
        assert first is not None and first < total / 2, (fmt, first, total)


def test_sse_stream(server: Server, client: OpenAI) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "coral", "input": SIX, "response_format": "mp3",
            "stream_format": "sse"}  # fmt: skip
    events = []
    with httpx.stream("POST", f"{server.base_url}/v1/audio/speech", json=body, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert len(events) >= 3
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    duration, _ = _decode(audio)
    assert duration > 8
    # Through the SDK's raw streaming interface too.
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="alloy",
        input="Hello there.",
        response_format="pcm",
        stream_format="sse",
    ) as raw:
        lines = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert json.loads(lines[-1][6:])["type"] == "speech.audio.done"


def test_instructions_and_voice_objects(client: OpenAI) -> None:
    data = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="sage", input="Good evening.", instructions="Speak calmly.",
        response_format="wav",
    ).content  # fmt: skip
    assert _decode(data)[0] > 0.3
    data = client.audio.speech.create(
        model="piper", voice={"id": "en_US-joe-medium"}, input="Hello.", response_format="wav"
    ).content
    assert _decode(data)[0] > 0.3


def test_every_openai_voice_name(client: OpenAI) -> None:
    voices = httpx.get(f"{client.base_url}audio/voices").json()["data"]
    mapped = {v["id"]: v["voice"] for v in voices}
    for name in ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
                 "marin", "cedar"):  # fmt: skip
        assert mapped[name] == "en_US-joe-medium"
        pcm = client.audio.speech.create(model="tts-1", voice=name, input="Yes.", response_format="pcm").content
        assert len(pcm) > 2400


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": "   \n "}, "input"),
        ({"input": "x" * 4097}, "input"),
        ({"voice": "nobody"}, "voice"),
        ({"response_format": "ogg"}, "response_format"),
        ({"speed": 0.1}, "speed"),
        ({"speed": 4.5}, "speed"),
        ({"model": "tts-1", "instructions": "Whisper."}, "instructions"),
        ({"model": "tts-1-hd", "stream_format": "sse"}, "stream_format"),
        ({"instructions": "x" * 4097}, "instructions"),
        ({"voice": None}, "voice"),
    ],
)
def test_bad_speech_requests(server: Server, body: dict, param: str) -> None:
    base = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hello."}
    response = _speech(server, {**base, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_unknown_tts_model_is_404(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="nope-tts", voice="alloy", input="Hi.")
    with pytest.raises(openai.NotFoundError):  # a speech-to-text model cannot speak
        client.audio.speech.create(model="whisper-1", voice="alloy", input="Hi.")


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe"])
def test_body_must_be_a_json_object(server: Server, raw: bytes) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/audio/speech", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and set(response.json()["error"]) == {
        "message",
        "type",
        "param",
        "code",
    }


def test_wrong_content_type(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/v1/audio/speech", data={"model": "tts-1", "input": "Hi"})
    assert response.status_code == 400 and response.json()["error"]["message"]


@pytest.mark.parametrize("text", ["...", "!?!", "😀🎉", "— – …"])
def test_unspeakable_text_gives_valid_audio_or_400(server: Server, text: str) -> None:
    for fmt in ("mp3", "wav"):
        response = _speech(server, {"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt})
        if response.status_code == 400:
            assert response.json()["error"]["param"] == "input"
        else:
            assert response.status_code == 200
            _decode(response.content)  # decodes without error


@pytest.fixture(scope="module")
def tts_server(start_server: Callable[..., Server], tmp_path_factory: pytest.TempPathFactory) -> Server:
    """An extra voice in VOXSERVE_VOICES_DIR, `alloy` remapped to it, one TTS slot and no queue."""
    from voxserve.bundled import piper_voice_dir

    voices = tmp_path_factory.mktemp("voices")
    shutil.copy(piper_voice_dir() / "en_US-joe-medium.onnx", voices / "my-voice.onnx")
    shutil.copy(piper_voice_dir() / "en_US-joe-medium.onnx.json", voices / "my-voice.onnx.json")
    return start_server(
        {
            "VOXSERVE_VOICES_DIR": str(voices),
            "VOXSERVE_VOICE_MAP": json.dumps({"alloy": "my-voice"}),
            "VOXSERVE_TTS_CONCURRENCY": "1",
            "VOXSERVE_TTS_QUEUE": "0",
        }
    )


def test_voices_dir_and_map(tts_server: Server) -> None:
    client = tts_server.client()
    listed = {v["id"]: v for v in httpx.get(f"{tts_server.base_url}/v1/audio/voices").json()["data"]}
    assert listed["my-voice"]["kind"] == "local" and listed["alloy"]["voice"] == "my-voice"
    assert listed["echo"]["voice"] == "en_US-joe-medium"
    pcm = client.audio.speech.create(model="tts-1", voice="my-voice", input="Hi there.", response_format="pcm")
    assert len(pcm.content) > 4800


def test_tts_queue_full_is_429_and_disconnect_stops_synthesis(tts_server: Server) -> None:
    long_text = " ".join([SIX] * 8)
    url = f"{tts_server.base_url}/v1/audio/speech"
    body = {"model": "tts-1", "voice": "echo", "input": long_text, "response_format": "pcm"}
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()  # kept: dropping the iterator would close the connection
        next(chunks)  # synthesis has started and holds the only slot
        busy = httpx.post(url, json=body, timeout=30)
        assert busy.status_code == 429 and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["code"] == "rate_limit_exceeded"
        chunks.close()
    # The client left after one chunk: the slot frees within a sentence or two, long before the
    # 48 sentences (over 5 s of synthesis on this machine) could have been spoken.
    deadline = time.monotonic() + 1.5
    while httpx.get(f"{tts_server.base_url}/health").json()["tts"]["active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(f"{tts_server.base_url}/health").json()["tts"]["active"] == 0
    ok = httpx.post(url, json={**body, "input": "Back to work."}, timeout=60)
    assert ok.status_code == 200 and len(ok.content) > 4800
