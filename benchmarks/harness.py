"""Shared benchmark harness: run a voxserve server on a free loopback port and read its peak memory.

Only the standard library and httpx: importing this loads no model code (faster-whisper, piper, llama.cpp),
so each benchmark's in-process figures are not skewed by another engine sitting in the same process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(preload: str, log_path: Path, timeout: float = 600) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start `voxserve serve` preloading `preload` (never unloading), yield (process, port) once /health is up."""
    port = free_port()
    env = os.environ | {"VOXSERVE_PRELOAD": preload, "VOXSERVE_MODEL_TTL": "-1"}
    # `-m voxserve` rather than the console script, so the pid is the server's Python process for /proc.
    cmd = [sys.executable, "-m", "voxserve", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in time")
            time.sleep(0.25)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"
