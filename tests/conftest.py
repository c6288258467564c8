"""Fixtures: real voxserve servers on loopback, the official openai client, and test audio."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.audio_tools import SENTENCES, speak, wav_bytes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], log_path: Path, args: list[str] | None = None) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxserve", "serve", "--port", str(self.port), *(args or [])],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start:\n{log_path.read_text()}")

    def client(self, api_key: str = "test-key", **kwargs: object) -> OpenAI:
        return OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("voxserve-cache")


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> Server:
        log = tmp_path_factory.mktemp("server") / "server.log"
        base_env = {"VOXSERVE_CACHE_DIR": str(model_cache), "VOXSERVE_API_KEYS": ""}
        server = Server({**base_env, **(env or {})}, log, args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture(scope="session")
def client(server: Server) -> OpenAI:
    return server.client()


KEY = "test-secret-key"


@pytest.fixture(scope="session")
def keyed_server(start_server: Callable[..., Server]) -> Server:
    """API keys on (and for /metrics too), one transcription at a time with no queue (so a second is a
    429), a 1 s model TTL (to see unloads), and JSON logs."""
    return start_server(
        {
            "VOXSERVE_API_KEYS": KEY,
            "VOXSERVE_METRICS_REQUIRE_KEY": "true",
            "VOXSERVE_MODEL_TTL": "1",
            "VOXSERVE_STT_CONCURRENCY": "1",
            "VOXSERVE_STT_QUEUE": "0",
            "VOXSERVE_LOG_FORMAT": "json",
        }
    )


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def english(audio_dir: Path) -> tuple[Path, str]:
    """Five English sentences spoken by the bundled voice, as a 22.05 kHz WAV, with their text."""
    text = " ".join(SENTENCES)
    samples, rate = speak(text)
    path = audio_dir / "english.wav"
    path.write_bytes(wav_bytes(samples, rate))
    return path, text


@pytest.fixture(scope="session")
def short_english(audio_dir: Path) -> tuple[Path, str]:
    text = SENTENCES[0]
    samples, rate = speak(text)
    path = audio_dir / "short.wav"
    path.write_bytes(wav_bytes(samples, rate))
    return path, text


@pytest.fixture(scope="session")
def long_english(audio_dir: Path, english: tuple[Path, str]) -> tuple[Path, str]:
    """The five sentences three times over with pauses (about 38 s): more than one 30 s Whisper window."""
    samples, rate = speak(" ".join(SENTENCES))
    pause = np.zeros(rate // 2, dtype=samples.dtype)
    path = audio_dir / "long_english.wav"
    path.write_bytes(wav_bytes(np.concatenate([samples, pause, samples, pause, samples]), rate))
    return path, " ".join([english[1]] * 3)


# The spoken question of the chat tests.
QUESTION = "Why do people like dogs?"


@pytest.fixture(scope="session")
def question_audio(client: OpenAI) -> dict[str, bytes]:
    """The question spoken by the server's own voice, as wav and mp3."""
    return {
        fmt: client.audio.speech.create(model="tts-1", voice="alloy", input=QUESTION, response_format=fmt).content
        for fmt in ("wav", "mp3")
    }
