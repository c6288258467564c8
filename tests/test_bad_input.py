"""Bad input, auth, limits and load: OpenAI-shaped errors, and the server keeps serving."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.audio_tools import SENTENCES, encode, speak, wav_bytes
from tests.conftest import Server


def _assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert response.headers.get("x-request-id", "").startswith("req_")
    return error


def _post(server: Server, data: dict | list, files: dict | None = None, path: str = "transcriptions") -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/audio/{path}", data=data, files=files, timeout=60)


def _wav(short_english: tuple[Path, str]) -> dict:
    return {"file": ("a.wav", short_english[0].read_bytes())}


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"", "empty"),
        (b"this is not audio at all, just some text " * 20, "text"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "truncated wav header"),
        (wav_bytes(speak("Hello")[0][:0], 22050), "zero-length wav"),
    ],
)
def test_undecodable_audio_is_400(client: OpenAI, payload: bytes, detail: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-1", file=("a.mp3", payload))
    assert info.value.status_code == 400
    assert "Supported formats" in info.value.message and "webm" in info.value.message


def test_truncated_m4a_is_400(server: Server) -> None:
    samples, rate = speak("Testing a file that was cut short.")
    m4a = encode(samples, rate, "ipod", "aac")
    error = _assert_openai_error(_post(server, {"model": "whisper-1"}, {"file": ("a.m4a", m4a[:200])}), 400)
    assert "Supported formats" in error["message"]


def test_missing_file_and_model(server: Server, short_english: tuple[Path, str]) -> None:
    _assert_openai_error(_post(server, {"model": "whisper-1"}), 400, "file")
    _assert_openai_error(_post(server, {}, _wav(short_english)), 400, "model")


def test_not_multipart(server: Server) -> None:
    response = httpx.post(f"{server.base_url}/v1/audio/transcriptions", json={"model": "whisper-1"})
    _assert_openai_error(response, 400, "file")


def test_unknown_model_is_404(client: OpenAI, short_english: tuple[Path, str]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.audio.transcriptions.create(model="no-such-model", file=short_english[0])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "mp3"}, "response_format"),
        ({"response_format": "diarized_json"}, "response_format"),
        ({"temperature": "1.5"}, "temperature"),
        ({"temperature": "warm"}, "temperature"),
        (
            {"timestamp_granularities[]": "paragraph", "response_format": "verbose_json"},
            "timestamp_granularities[0]",
        ),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities"),
        ({"include[]": "logprobs", "response_format": "verbose_json"}, "include"),
        ({"include[]": "everything"}, "include[0]"),
        ({"stream": "maybe"}, "stream"),
        ({"stream": "true", "response_format": "srt"}, "stream"),
        ({"language": "xx"}, "language"),
        ({"chunking_strategy": "manual"}, "chunking_strategy"),
        (
            {"chunking_strategy[type]": "server_vad", "chunking_strategy[threshold]": "3"},
            "chunking_strategy.threshold",
        ),
    ],
)
def test_bad_values_are_400_with_param(
    server: Server, short_english: tuple[Path, str], fields: dict, param: str
) -> None:
    _assert_openai_error(_post(server, {"model": "whisper-1", **fields}, _wav(short_english)), 400, param)


def test_english_only_model_cannot_translate(client: OpenAI, short_english: tuple[Path, str]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.translations.create(model="whisper-tiny.en", file=short_english[0])
    assert "whisper-base" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="whisper-tiny.en", file=short_english[0], language="de")
    assert info.value.param == "language"


def test_unknown_route_and_method(server: Server) -> None:
    _assert_openai_error(httpx.get(f"{server.base_url}/v1/nothing-here"), 404)
    _assert_openai_error(httpx.get(f"{server.base_url}/v1/audio/transcriptions"), 405)


def test_request_id_on_success(server: Server) -> None:
    response = httpx.get(f"{server.base_url}/v1/models")
    assert response.status_code == 200 and response.headers["x-request-id"].startswith("req_")


def test_server_still_serves_after_bad_input(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, _ = short_english
    for _ in range(3):
        with pytest.raises(openai.BadRequestError):
            client.audio.transcriptions.create(model="whisper-1", file=("x.wav", b"garbage" * 100))
    assert client.audio.transcriptions.create(model="whisper-1", file=path).text


@pytest.fixture(scope="module")
def limited_server(start_server: Callable[..., Server]) -> Server:
    """API keys on, a 1 MB upload limit, and one slot with no queue."""
    return start_server(
        {
            "VOXSERVE_API_KEYS": "sk-first-key,sk-second-key",
            "VOXSERVE_MAX_UPLOAD_MB": "1",
            "VOXSERVE_STT_CONCURRENCY": "1",
            "VOXSERVE_STT_QUEUE": "0",
        }
    )


def test_api_key_required(limited_server: Server, short_english: tuple[Path, str]) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        limited_server.client(api_key="sk-wrong").models.list()
    assert info.value.code == "invalid_api_key"
    _assert_openai_error(httpx.get(f"{limited_server.base_url}/v1/models"), 401)
    assert limited_server.client(api_key="sk-second-key").models.list().data
    # Health stays open for load balancers.
    assert httpx.get(f"{limited_server.base_url}/health").status_code == 200


def test_upload_over_limit_is_413(limited_server: Server) -> None:
    headers = {"Authorization": "Bearer sk-first-key"}
    big = b"\0" * (1024 * 1024 + 10_000)
    response = httpx.post(
        f"{limited_server.base_url}/v1/audio/transcriptions",
        headers=headers,
        data={"model": "whisper-1"},
        files={"file": ("big.wav", big)},
        timeout=30,
    )
    error = _assert_openai_error(response, 413)
    assert "Maximum content size limit" in error["message"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        yield body
        for _ in range(40):
            yield b"\0" * 65536

    response = httpx.post(
        f"{limited_server.base_url}/v1/audio/transcriptions",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        content=chunks(),
        timeout=30,
    )
    _assert_openai_error(response, 413)
    assert limited_server.client(api_key="sk-first-key").models.list().data


def test_queue_full_is_429_with_retry_after(limited_server: Server, audio_dir: Path) -> None:
    samples, rate = speak(" ".join(SENTENCES * 2))
    long_mp3 = encode(samples, rate, "mp3", "libmp3lame")  # under the 1 MB limit
    client = limited_server.client(api_key="sk-first-key")
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(
            client.audio.transcriptions.create(model="whisper-base", file=("long.mp3", long_mp3))
        )
    )
    worker.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = httpx.get(f"{limited_server.base_url}/health").json()
        if health["stt"]["active"] == 1:
            break
        time.sleep(0.02)
    response = httpx.post(
        f"{limited_server.base_url}/v1/audio/transcriptions",
        headers={"Authorization": "Bearer sk-first-key"},
        data={"model": "whisper-base"},
        files={"file": ("a.mp3", long_mp3)},
        timeout=30,
    )
    error = _assert_openai_error(response, 429)
    assert error["code"] == "rate_limit_exceeded"
    assert int(response.headers["retry-after"]) >= 1
    with pytest.raises(openai.RateLimitError):
        client.audio.transcriptions.create(model="whisper-base", file=("long.mp3", long_mp3))
    worker.join(60)
    assert results and getattr(results[0], "text", "")


def test_health_is_fast_during_two_long_transcriptions(server: Server) -> None:
    samples, rate = speak(" ".join(SENTENCES * 3))
    data = wav_bytes(samples, rate)
    client = server.client()
    workers = [
        threading.Thread(target=lambda: client.audio.transcriptions.create(model="whisper-base", file=("a.wav", data)))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    with httpx.Client(base_url=server.base_url) as http:
        deadline = time.monotonic() + 30
        while http.get("/health").json()["stt"]["active"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        timings = []
        for _ in range(20):
            started = time.perf_counter()
            assert http.get("/health").status_code == 200
            timings.append(time.perf_counter() - started)
            time.sleep(0.05)
        busy = http.get("/health").json()["stt"]["active"]
    for worker in workers:
        worker.join(120)
    assert busy >= 1, "the transcriptions finished before health was measured"
    timings.sort()
    assert timings[len(timings) // 2] < 0.1, timings


def test_refuses_public_host_without_keys(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "voxserve", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", "VOXSERVE_API_KEYS": "", "HOME": str(tmp_path)},
        capture_output=True,
        timeout=60,
        text=True,
    )
    assert result.returncode == 2
    assert "--allow-unauthenticated" in result.stderr
