"""Probes of uploaded audio and forms (benchmarks/probes.py): odd multipart fields, broken and odd
audio files, and oversized inputs (decompression bombs, bodies past the limit, huge headers)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

from prober import Prober, wav


def group_forms(p: Prober, clip: bytes) -> None:
    path = "/v1/audio/transcriptions"
    fields = ("model", "response_format", "temperature", "language", "stream", "include[]", "timestamp_granularities[]")
    for key in fields:
        for value in ("", "x" * 5000, "-1", "1e309", "nan", "[]", "{}", "\x00"):
            p.request(
                f"{key}={value[:12]!r}",
                "POST",
                path,
                data={"model": "whisper-1", key: value},
                files={"file": ("a.wav", clip)},
            )
    for value in ("auto", '{"type": "server_vad", "threshold": "x"}', "{", '{"type": "nope"}', "[1]"):
        p.request(
            f"chunking_strategy={value}",
            "POST",
            path,
            data={"model": "whisper-1", "chunking_strategy": value},
            files={"file": ("a.wav", clip)},
        )
    p.request("no file", "POST", path, {400}, data={"model": "whisper-1"})
    p.request("file as text", "POST", path, {400}, data={"model": "whisper-1", "file": "abc"})
    p.request(
        "file under another name", "POST", path, {400}, data={"model": "whisper-1"}, files={"audio": ("a.wav", clip)}
    )
    p.request(
        "two files",
        "POST",
        path,
        {400},
        data={"model": "whisper-1"},
        files=[("file", ("a.wav", clip)), ("file", ("b.wav", clip))],
    )
    p.request("json body", "POST", path, {400}, json={"model": "whisper-1"})
    p.request(
        "bad boundary",
        "POST",
        path,
        {400},
        content=b"--x\r\nnonsense",
        headers={"content-type": "multipart/form-data; boundary=y"},
    )
    p.request("no boundary", "POST", path, {400}, content=b"abc", headers={"content-type": "multipart/form-data"})
    p.request(
        "100 fields",
        "POST",
        path,
        {400},
        data={f"f{i}": "v" for i in range(100)} | {"model": "whisper-1"},
        files={"file": ("a.wav", clip)},
    )
    p.request(
        "translation odd model",
        "POST",
        "/v1/audio/translations",
        {404},
        data={"model": "\x00"},
        files={"file": ("a.wav", clip)},
    )
    p.request("translation no file", "POST", "/v1/audio/translations", {400}, data={"model": "whisper-1"})


def group_audio(p: Prober, clip: bytes) -> None:
    path = "/v1/audio/transcriptions"
    files = {
        "empty": b"",
        "text": b"hello " * 100,
        "wav header only": clip[:44],
        "half wav": clip[: len(clip) // 2],
        "1 ms": wav(0.001),
        "silence 10 s": wav(10, tone=False),
        "8 kHz": wav(1, 8000),
        "96 kHz": wav(0.5, 96000),
        "random bytes": os.urandom(4096),
        "RIFF garbage": b"RIFF\xff\xff\xff\x7fWAVEfmt " + os.urandom(200),
        "ID3 garbage": b"ID3" + os.urandom(500),
        "OggS garbage": b"OggS" + os.urandom(500),
        "fLaC garbage": b"fLaC" + os.urandom(500),
    }
    for name, data in files.items():
        for fmt in ("json", "verbose_json"):
            p.request(
                f"{name} {fmt}",
                "POST",
                path,
                {200, 400},
                data={"model": "whisper-1", "response_format": fmt},
                files={"file": ("a.wav", data)},
            )
        p.request(
            f"{name} stream",
            "POST",
            path,
            {200, 400},
            data={"model": "whisper-1", "stream": "true"},
            files={"file": ("a.wav", data)},
        )


def group_oversized(p: Prober) -> None:
    path = "/v1/audio/transcriptions"
    bomb = wav(2 * 3600, rate=100)  # 1.4 MB, two hours
    p.request(
        "2 h at 100 Hz (bomb)", "POST", path, {400}, data={"model": "whisper-1"}, files={"file": ("bomb.wav", bomb)}
    )
    p.request(
        "bomb streamed",
        "POST",
        path,
        {400},
        data={"model": "whisper-1", "stream": "true"},
        files={"file": ("bomb.wav", bomb)},
    )
    p.request(
        "bomb translated",
        "POST",
        "/v1/audio/translations",
        {400},
        data={"model": "whisper-1"},
        files={"file": ("bomb.wav", bomb)},
    )
    chat_bomb = {
        "model": "gpt-4o-audio-preview",
        "max_tokens": 4,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": base64.b64encode(bomb).decode(), "format": "wav"}}
                ],
            }
        ],
    }
    p.json("chat input_audio bomb", "/v1/chat/completions", chat_bomb, expect={400})
    p.request(
        "26 MB declared",
        "POST",
        path,
        {413},
        content=b"x" * (26 * 1024 * 1024),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )

    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
        for _ in range(420):
            yield b"\0" * 65536

    p.request(
        "26 MB chunked",
        "POST",
        path,
        {413},
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    p.json(
        "20 MB speech input", "/v1/audio/speech", {"model": "tts-1", "voice": "alloy", "input": "a" * 20_000_000}, {400}
    )
    p.raw_probe(
        "100 KB of headers",
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        5,
        b"HTTP/1.1 431",
    )
    p.raw_probe("not HTTP", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 5, b"HTTP/1.1 400")
