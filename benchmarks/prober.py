"""The probes' judge (benchmarks/probes.py): one request or raw connection a careless or malicious client
could send, judged (no 5xx, no broken 200, every error in the OpenAI envelope with a 4xx status), and
whether the server is alive and idle after a group of them. Also the inputs the probes share."""

from __future__ import annotations

import io
import json
import socket
import time
import wave
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx


@dataclass
class Outcome:
    name: str
    status: int | None
    problem: str | None = None


@dataclass
class Group:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    after: str | None = None  # alive-and-idle problem after the group


class Prober:
    def __init__(self, base_url: str, key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        parsed = urlparse(self.base_url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=120, headers=self.headers)
        self.group: Group | None = None

    # --- judging ---------------------------------------------------------------------------------------

    def judge(self, name: str, response: httpx.Response, expect: set[int] | None = None) -> None:
        problem = None
        status = response.status_code
        if status >= 500:
            problem = f"{status}: {response.text[:200]}"
        elif status >= 400 and response.request.method != "HEAD":  # a HEAD answer has no body
            try:
                body = response.json()
                if set(body) != {"error"} or set(body["error"]) != {"message", "type", "param", "code"}:
                    problem = f"not the OpenAI envelope: {response.text[:200]}"
            except ValueError:
                problem = f"non-JSON error body: {response.text[:200]}"
        elif response.headers.get("content-type", "").startswith("text/event-stream"):
            for line in response.text.splitlines():
                if line.startswith("data: ") and line != "data: [DONE]" and '"error"' in line:
                    problem = f"error event after 200: {line[:200]}"
                    break
        if problem is None and expect is not None and status not in expect:
            problem = f"status {status}, expected {sorted(expect)}: {response.text[:160]}"
        assert self.group is not None
        self.group.outcomes.append(Outcome(name, status, problem))

    def request(self, name: str, method: str, path: str, expect: set[int] | None = None, **kwargs: Any) -> None:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:  # a body cut short, a dropped connection, a timeout
            assert self.group is not None
            self.group.outcomes.append(Outcome(name, None, f"{type(exc).__name__}: {exc}"))
            return
        self.judge(name, response, expect)

    def json(self, name: str, path: str, body: Any, expect: set[int] | None = None) -> None:
        raw = body if isinstance(body, bytes | str) else json.dumps(body, ensure_ascii=True)
        self.request(name, "POST", path, expect, content=raw, headers={"content-type": "application/json"})

    def raw(self, payload: bytes, wait: float) -> bytes:
        """Send raw bytes on a fresh connection; what came back within `wait` seconds."""
        with socket.create_connection((self.host, self.port)) as sock:
            sock.sendall(payload)
            sock.settimeout(wait)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
            except (TimeoutError, ConnectionResetError):
                pass
        return received

    def raw_probe(self, name: str, payload: bytes, wait: float, expect: bytes | None) -> None:
        received = self.raw(payload, wait)
        status = int(received[9:12]) if received.startswith(b"HTTP/1.1 ") else None
        problem = None
        if status is not None and status >= 500:
            problem = f"{status}: {received[:200]!r}"
        elif status is not None and status >= 400 and b'"error"' not in received:
            problem = f"not the OpenAI envelope: {received[:200]!r}"
        if expect is not None and not received.startswith(expect):
            problem = f"expected {expect!r}, got {received[:120]!r}"
        assert self.group is not None
        self.group.outcomes.append(Outcome(name, status, problem))

    def alive_and_idle(self, timeout: float = 20) -> str | None:
        deadline = time.monotonic() + timeout
        state: Any = None
        while time.monotonic() < deadline:
            try:
                state = httpx.get(f"{self.base_url}/health", timeout=5).json()
            except httpx.HTTPError as exc:
                return f"/health failed: {exc}"
            if all(state[k]["active"] == 0 and state[k]["queued"] == 0 for k in ("stt", "tts", "chat")):
                return None
            time.sleep(0.1)
        return f"still busy after {timeout} s: {state}"


# --- inputs ---------------------------------------------------------------------------------------------


def wav(seconds: float, rate: int = 16000, tone: bool = True) -> bytes:
    import math

    frames = bytearray()
    for i in range(int(seconds * rate)):
        value = int(8000 * math.sin(2 * math.pi * 220 * i / rate)) if tone else 0
        frames += value.to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return buffer.getvalue()


ODD_VALUES: list[Any] = [None, True, 0, -1, 1e308, "", "x" * 5000, [], ["a"], {}, {"a": 1}, "\x00", "🎉"]
