"""Probes of request bodies and fields (benchmarks/probes.py): malformed JSON, odd values in every
field of speech and chat requests, hostile speech text, and the routes and keys themselves."""

from __future__ import annotations

import json
from typing import Any

import httpx

from prober import ODD_VALUES, Prober


def group_json(p: Prober) -> None:
    bodies: dict[str, str | bytes] = {
        "empty": "",
        "not json": "{model: tts-1}",
        "array": "[1, 2]",
        "string": '"hello"',
        "arrays 10000 deep": "[" * 10_000 + "]" * 10_000,
        "objects 500 deep": '{"a":' * 500 + "1" + "}" * 500,
        "NaN": '{"model": "tts-1", "input": "hi", "voice": "alloy", "speed": NaN}',
        "Infinity": '{"model": "tts-1", "input": "hi", "voice": "alloy", "speed": Infinity}',
        "5000-digit int": '{"model": "tts-1", "input": "hi", "voice": "alloy", "speed": ' + "9" * 5000 + "}",
        "invalid utf-8": b'{"model": "tts-1", "input": "\xff\xfe", "voice": "alloy"}',
        "utf-16": '{"model": "tts-1", "input": "hi", "voice": "alloy"}'.encode("utf-16"),
        "lone surrogate": '{"model": "tts-1", "input": "\\ud800", "voice": "alloy"}',
        "trailing garbage": '{"model": "tts-1"} xyz',
        "duplicate keys": '{"model": "tts-1", "model": 5, "input": "hi", "voice": "alloy"}',
        "1 MB string": json.dumps({"model": "tts-1", "input": "a" * 1_000_000, "voice": "alloy"}),
    }
    for path in ("/v1/audio/speech", "/v1/chat/completions"):
        for name, body in bodies.items():
            # Well-formed bodies (UTF-16 JSON is JSON; a lone surrogate is a valid escape) are judged on
            # their content: a speech model on the chat route is a 404.
            valid = name in ("utf-16", "lone surrogate", "1 MB string", "duplicate keys")
            p.json(f"{path} {name}", path, body, expect={200, 400, 404} if valid else {400})
        p.request(f"{path} form body", "POST", path, {400}, data={"model": "tts-1"})
        p.request(f"{path} no content-type", "POST", path, {400}, content=b"{}")


def group_speech_fields(p: Prober) -> None:
    base = {"model": "tts-1", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}
    for key in ("model", "voice", "input", "response_format", "speed", "stream_format", "stream", "instructions"):
        for value in ODD_VALUES:
            body = {**base, key: value}
            p.json(f"{key}={json.dumps(value)[:20]}", "/v1/audio/speech", body)
    for key in ("model", "voice", "input"):
        p.json(f"missing {key}", "/v1/audio/speech", {k: v for k, v in base.items() if k != key}, expect={400})
    p.json("voice object", "/v1/audio/speech", {**base, "voice": {"id": "alloy"}}, expect={200})
    p.json("input 4097 chars", "/v1/audio/speech", {**base, "input": "a " * 2049}, expect={400})


def group_speech_text(p: Prober) -> None:
    base = {"model": "gpt-4o-mini-tts", "voice": "alloy", "response_format": "mp3"}
    texts = {
        "NUL": "hello\x00world",
        "only NUL": "\x00",
        "escape sequences": "\x1b[31mred\x1b[0m and \x07bell",
        "C1 controls": "a\x85b\x9fc",
        "emoji only": "🎉🥳",
        "emoji sequences": "👨‍👩‍👧 🇺🇸 1️⃣ 👍🏽",
        "piper phoneme syntax": "[[ həˈloʊ ]] [[",
        "bidi marks": "\u202eabc\u202c \u200f",
        "zero width": "\u200b\u200c\u200d\ufeff",
        "s' x220 (espeak overflow)": "s'" * 220,
        "x. x120 (espeak overflow)": "x." * 120,
        "ж. x60 (espeak overflow)": "ж." * 60,
        "long word": "a" * 4000,
        "digits": "9" * 4000,
        "punctuation": "?!.,;:" * 100,
        "mixed scripts": "日本語 العربية עברית русский ελληνικά",
    }
    for name, text in texts.items():
        for stream in (True, False):
            p.json(f"{name} stream={stream}", "/v1/audio/speech", {**base, "input": text, "stream": stream}, {200, 400})
        p.json(f"{name} sse", "/v1/audio/speech", {**base, "input": text, "stream_format": "sse"}, {200, 400})


def group_chat(p: Prober, question_b64: str) -> None:
    base: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    for key in (
        "model",
        "messages",
        "stream",
        "modalities",
        "audio",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "n",
        "response_format",
        "stream_options",
        "presence_penalty",
        "tools",
    ):
        for value in (None, "x", -1, [], {}, [1], {"a": 1}):
            p.json(f"{key}={json.dumps(value)}", "/v1/chat/completions", {**base, key: value})
    for content in (
        5,
        {"a": 1},
        None,
        [],
        [5],
        [{"type": "text"}],
        [{"type": "input_audio"}],
        [{"type": "input_audio", "input_audio": {"data": "!!", "format": "wav"}}],
        [{"type": "input_audio", "input_audio": {"data": question_b64, "format": "mp3"}}],
    ):
        p.json(
            f"content={json.dumps(content)[:40]}",
            "/v1/chat/completions",
            {**base, "messages": [{"role": "user", "content": content}]},
        )
    for stream_field in ("temperature", "max_tokens", "stop"):
        p.json(f"stream with {stream_field}='x'", "/v1/chat/completions", {**base, "stream": True, stream_field: "x"})


def group_auth_and_routes(p: Prober, keyed: bool) -> None:
    if keyed:
        for name, headers in (
            ("no key", {}),
            ("wrong key", {"Authorization": "Bearer sk-wrong"}),
            ("basic auth", {"Authorization": "Basic eDp5"}),
            ("bearer without key", {"Authorization": "Bearer"}),
        ):
            p.judge(name, httpx.get(f"{p.base_url}/v1/models", headers=headers), {401})
        p.judge("health open without key", httpx.get(f"{p.base_url}/health"), {200})
    p.request("unknown route", "GET", "/v1/nothing", {404})
    p.request("wrong method", "GET", "/v1/audio/speech", {405})
    p.request("unknown model", "GET", "/v1/models/nope", {404})
    p.request("odd model id", "GET", "/v1/models/%00%ff", {404})
    p.request("long url", "GET", "/v1/" + "a" * 20_000, {404, 431})
    p.request("HEAD health", "HEAD", "/health", {200, 405})
    p.request("OPTIONS speech", "OPTIONS", "/v1/audio/speech", {405})
