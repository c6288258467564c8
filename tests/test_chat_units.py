"""Unit tests for the chat parts that need no model: the spoken-reply pipeline (fake backend and voice),
alias patterns, generation defaults, template shaping, request checks."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from voxserve import process_memory
from voxserve.config import Settings
from voxserve.engines.llama_chat import Sampling, llama_arguments, template_messages
from voxserve.engines.spoken_reply import (
    AudioPiece,
    ReplyDone,
    SpokenReply,
    TextDelta,
    ToolCallDelta,
    split_sentences,
    with_voice_instructions,
)
from voxserve.errors import InvalidRequest, ModelNotFound
from voxserve.runtime import Runtime
from voxserve.server.chat_request import find_lone_surrogate

RATE = 24000


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


class FakeBackend:
    """A backend stream of one token per word, that records how far it was pulled and whether it closed."""

    def __init__(self, text: str, delay: float = 0.0, tool_call: bool = False) -> None:
        self.tokens = [word + " " for word in text.split()]
        self.delay = delay
        self.tool_call = tool_call
        self.pulled = 0
        self.closed = False

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        try:
            yield _chunk({"role": "assistant"})
            for token in self.tokens:
                await asyncio.sleep(self.delay)
                self.pulled += 1
                yield _chunk({"content": token})
            if self.tool_call:
                yield _chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f"}}]})
            yield _chunk({}, "stop")
            yield {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(self.tokens)}}
        finally:
            self.closed = True


class FakeVoice:
    """Synthesis at 50 ms of PCM per word, taking `delay` seconds; can hold the first piece."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.spoken: list[str] = []
        self.hold_first = asyncio.Event()
        self.hold_first.set()
        self.cancelled = 0

    async def synthesize(self, voice: Any, text: str, speed: float, fmt: str) -> tuple[bytes, float]:
        assert fmt == "pcm"
        try:
            if not self.spoken:
                await self.hold_first.wait()
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.spoken.append(text)
        samples = int(RATE * 0.05 * len(text.split()) / speed)
        return b"\x01\x00" * samples, samples / RATE


ANSWER = (
    "Golden retrievers are friendly, patient and gentle dogs. They love children and learn quickly. "
    "Most families find them easy to train."
)


def _reply(backend: FakeBackend, voice: FakeVoice, speak: bool = True, speed: float = 1.0) -> SpokenReply:
    return SpokenReply(backend.stream(), voice, object() if speak else None, speed)  # type: ignore[arg-type]


def test_reply_events_cover_the_text_and_its_speech() -> None:
    async def scenario() -> None:
        backend, voice = FakeBackend(ANSWER), FakeVoice()
        events = [event async for event in _reply(backend, voice).events()]
        texts = [e.text for e in events if isinstance(e, TextDelta)]
        pieces = [e for e in events if isinstance(e, AudioPiece)]
        done = events[-1]
        assert isinstance(done, ReplyDone) and done.finish_reason == "stop"
        assert "".join(texts) == done.text == " ".join(ANSWER.split()) + " "
        assert done.usage == {"prompt_tokens": 3, "completion_tokens": len(backend.tokens)}
        # The first piece is the opening clause, then whole sentences; offsets follow each other.
        assert [p.text for p in pieces] == [
            "Golden retrievers are friendly,",
            "patient and gentle dogs.",
            "They love children and learn quickly.",
            "Most families find them easy to train.",
        ]
        assert pieces[0].start_ms == 0 and all(a.end_ms == b.start_ms for a, b in itertools.pairwise(pieces))
        assert done.audio_ms == pytest.approx(sum(len(p.pcm) / 2 / RATE * 1000 for p in pieces))
        assert backend.closed

    asyncio.run(scenario())


def test_generation_waits_while_the_first_piece_is_spoken() -> None:
    async def scenario() -> None:
        backend, voice = FakeBackend(ANSWER), FakeVoice()
        voice.hold_first.clear()
        reply = _reply(backend, voice)
        seen: list[Any] = []

        async def consume() -> None:
            async for event in reply.events():
                seen.append(event)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        pulled = backend.pulled
        assert pulled == 4  # "Golden retrievers are friendly," and no further
        await asyncio.sleep(0.05)
        assert backend.pulled == pulled
        voice.hold_first.set()
        await task
        assert backend.pulled == len(backend.tokens) and isinstance(seen[-1], ReplyDone)

    asyncio.run(scenario())


def test_closing_a_reply_stops_generation_and_synthesis_at_once() -> None:
    async def scenario() -> None:
        backend, voice = FakeBackend(ANSWER * 20, delay=0.01), FakeVoice(delay=0.5)
        reply = _reply(backend, voice, speed=1.5)
        seen: list[Any] = []

        async def consume() -> None:
            async for event in reply.events():
                seen.append(event)

        task = asyncio.create_task(consume())
        while not any(isinstance(e, AudioPiece) for e in seen):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the second sentence is generated and its synthesis under way
        loop = asyncio.get_running_loop()
        started = loop.time()
        await reply.aclose()  # from another task, mid-answer, with a synthesis in flight
        await asyncio.wait_for(task, 1)
        assert loop.time() - started < 0.2
        assert backend.closed and backend.pulled < len(backend.tokens)
        assert voice.cancelled == 1
        assert not any(isinstance(e, ReplyDone) for e in seen)
        heard = [e for e in seen if isinstance(e, AudioPiece)]
        assert reply.audio_ms == pytest.approx(heard[-1].end_ms)  # what was emitted, for truncation

    asyncio.run(scenario())


def test_text_only_reply_and_tool_calls_pass_through() -> None:
    async def scenario() -> None:
        backend, voice = FakeBackend("Calling the tool now.", tool_call=True), FakeVoice()
        events = [event async for event in _reply(backend, voice, speak=False).events()]
        assert not voice.spoken and not any(isinstance(e, AudioPiece) for e in events)
        calls = [e for e in events if isinstance(e, ToolCallDelta)]
        assert calls and calls[0].tool_calls[0]["id"] == "call_1"
        assert isinstance(events[-1], ReplyDone) and events[-1].audio_ms == 0

    asyncio.run(scenario())


def test_split_sentences_first_piece() -> None:
    assert split_sentences("Hello there. How are") == (["Hello there."], "How are")
    long = "The answer to this question is a classic example of a rhetorical question that"
    assert split_sentences(long, first_clause=True)[0] == [
        "The answer to this question is a classic example of a rhetorical"
    ]


def test_the_first_piece_ends_with_its_last_token() -> None:
    # A clause or sentence of a few words is complete at its punctuation: no wait for the next token's space.
    assert split_sentences("People like dogs because they are loyal,", first_clause=True) == (
        ["People like dogs because they are loyal,"],
        "",
    )
    assert split_sentences("Paris is the capital of France.", first_clause=True) == (
        ["Paris is the capital of France."],
        "",
    )
    # ...but not where the text may go on: a number, an initial, an abbreviation, a short start.
    for unfinished in ("It costs about 1,", "It costs about 3.", "She lives in the U.", "Some are pets, e.g.", "Yes,"):
        assert split_sentences(unfinished, first_clause=True) == ([], unfinished)
    # Later sentences still wait for the space (only the first piece's latency matters).
    assert split_sentences("Paris is the capital of France.") == ([], "Paris is the capital of France.")


def test_voice_instructions_only_without_a_system_or_developer_message() -> None:
    user = [{"role": "user", "content": "Hi"}]
    assert with_voice_instructions(user, "Be brief.") == [{"role": "system", "content": "Be brief."}, *user]
    own = [{"role": "developer", "content": "Speak like a pirate."}, *user]
    assert with_voice_instructions(own, "Be brief.") == own
    assert with_voice_instructions(user, "") == user


def test_generation_defaults_apply_only_where_the_request_is_silent() -> None:
    sampling = Sampling(max_tokens=64, temperature=0.3, repeat_penalty=1.2)
    args = llama_arguments({"model": "m", "messages": []}, sampling)
    assert args["max_tokens"] == 64 and args["temperature"] == 0.3 and args["repeat_penalty"] == 1.2
    args = llama_arguments({"max_completion_tokens": 9, "temperature": 0, "top_p": 0.5}, sampling)
    assert args["max_tokens"] == 9 and args["temperature"] == 0 and args["top_p"] == 0.5
    assert llama_arguments({"temperature": 0, "max_completion_tokens": 9, "stop": ["x"], "user": "u"}) == {
        "temperature": 0,
        "max_tokens": 9,
        "stop": ["x"],
    }
    with pytest.raises(InvalidRequest):
        llama_arguments({"tools": [{"type": "function"}]})
    with pytest.raises(InvalidRequest):
        llama_arguments({"n": 2})
    assert llama_arguments({"tools": [], "n": None}) == {}


def test_template_messages() -> None:
    shaped = template_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
            {"role": "function", "name": "f", "content": "42"},
        ]
    )
    assert [m["role"] for m in shaped] == ["system", "assistant", "tool"]
    assert shaped[1]["content"] == ""


def test_lone_surrogates_are_found_where_they_are() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "ok"}, {"text": "x\udc00"}]}]}
    assert find_lone_surrogate(body) == "messages[0].content[1].text"
    assert find_lone_surrogate({"a": ["caf\u00e9", "\U0001f600"]}) is None
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    assert find_lone_surrogate({"deep": deep}) is None


NAMES = {
    "stt": [
        "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe", "gpt-live-transcribe",
        "gpt-realtime-whisper", "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-2026-03-01",
    ],
    "tts": ["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15", "tts-1-hd-1106"],
    "chat": [
        "gpt-4o-audio-preview", "gpt-4o-audio-preview-2025-06-03", "gpt-4o-mini-audio-preview-2024-12-17",
        "gpt-audio", "gpt-audio-1.5", "gpt-audio-mini-2025-10-06", "gpt-4o", "gpt-4o-mini-2024-07-18",
    ],
    "realtime": [
        "gpt-realtime", "gpt-realtime-2.1", "gpt-realtime-mini", "gpt-realtime-2025-08-28",
        "gpt-4o-realtime-preview", "gpt-4o-mini-realtime-preview", "gpt-4o-realtime-preview-2024-12-17",
    ],
}  # fmt: skip


def test_openai_names_resolve_to_the_default_of_their_kind() -> None:
    settings = Settings()
    registry = Runtime.build(settings).registry
    defaults = {
        "stt": settings.default_stt_model,
        "tts": settings.default_tts_model,
        "chat": settings.default_chat_model,
        "realtime": "voxserve-realtime",
    }
    for kind, names in NAMES.items():
        for name in names:
            assert registry.resolve(name, kind).id == defaults[kind], name
            assert registry.resolve(name).id == defaults[kind], name
    # A name of one kind is not a model of another, and near misses are not names at all.
    with pytest.raises(ModelNotFound):
        registry.resolve("gpt-realtime-whisper", "realtime")
    for name in ("gpt-4o-transcribe-diarize", "gpt-realtimer", "my-gpt-realtime", "whisper-2"):
        with pytest.raises(ModelNotFound):
            registry.resolve(name)
    listed = {model_id: spec.kind for model_id, spec in registry.listing()}
    assert listed["voxserve-realtime"] == "realtime" and listed["gpt-realtime"] == "realtime"
    assert listed["qwen2.5-coder-0.5b"] == "chat" and listed["gpt-transcribe"] == "stt"
    assert {kind for kind, _ in [(s.kind, i) for i, s in registry.listing()]} >= {"stt", "tts", "voice", "chat"}


def test_alias_patterns_are_configurable_per_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXSERVE_REALTIME_ALIAS_PATTERNS", r"acme-voice-\d+")
    monkeypatch.setenv("VOXSERVE_CHAT_ALIAS_PATTERNS", '["acme-chat(-.*)?", "gpt-5(-.*)?"]')
    registry = Runtime.build(Settings()).registry
    assert registry.resolve("acme-voice-7", "realtime").id == "voxserve-realtime"
    assert registry.resolve("gpt-5-mini", "chat").id == Settings().default_chat_model
    assert registry.resolve("gpt-realtime", "realtime").id == "voxserve-realtime"  # the explicit alias stays
    with pytest.raises(ModelNotFound):
        registry.resolve("gpt-realtime-2.1", "realtime")  # the default pattern was replaced
    monkeypatch.setenv("VOXSERVE_STT_ALIAS_PATTERNS", "whisper-(")
    with pytest.raises(ValueError, match="not a regular expression"):
        Settings()


class _Engine:
    context = 100
    longest_token = 4

    def __init__(self) -> None:
        self.counted = 0

    def count_tokens(self, texts: list[str]) -> int:
        self.counted += 1
        return sum(len(t.split()) for t in texts)


class _Registry:
    def __init__(self) -> None:
        self.engine = _Engine()

    def lease(self, spec: Any) -> Any:
        import contextlib

        return contextlib.nullcontext(self.engine)


def test_prompt_length_is_decided_by_bounds_then_by_counting() -> None:
    from voxserve.engines.llama_chat import EmbeddedChat

    registry = _Registry()
    chat = EmbeddedChat(registry, gate=None)  # type: ignore[arg-type]
    few = [{"role": "user", "content": "hi"}]
    chat._check_prompt(None, few)  # type: ignore[arg-type]  # 2 bytes + overhead < 100 tokens: fits
    assert registry.engine.counted == 0
    huge = [{"role": "user", "content": "x" * 400}]  # at least 400 / 4 = 100 tokens: refused uncounted
    with pytest.raises(InvalidRequest) as info:
        chat._check_prompt(None, huge)  # type: ignore[arg-type]
    assert info.value.code == "context_length_exceeded" and registry.engine.counted == 0
    registry.engine.context = 200  # between the bounds: counted
    words = [{"role": "user", "content": "word " * 60}]  # 300 bytes, 60 "tokens" + 80 overhead
    chat._check_prompt(None, words)  # type: ignore[arg-type]
    assert registry.engine.counted == 1
    with pytest.raises(InvalidRequest):
        chat._check_prompt(None, [{"role": "user", "content": "word " * 130}])  # type: ignore[arg-type]
    assert registry.engine.counted == 2


def _fake_split_gguf(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    import hashlib

    from voxserve import bundled

    halves = {"fake_part1": b"GGUF first|", "fake_part2": b"second"}
    for package, data in halves.items():
        (tmp_path / package / "data").mkdir(parents=True)
        (tmp_path / package / "data" / f"part0{package[-1]}.bin").write_bytes(data)
    monkeypatch.setattr(bundled, "_package_dir", lambda package, *parts: tmp_path.joinpath(package, *parts))
    return bundled.SplitGguf(
        file_name="fake.gguf", package="fake_part{n}", part="data/part{n:02d}.bin", parts=2,
        sha256=hashlib.sha256(b"GGUF first|second").hexdigest(), size=17,
    )  # fmt: skip


def test_split_gguf_is_joined_once_verified_and_rebuilt_when_corrupt(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from voxserve import bundled

    gguf = _fake_split_gguf(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    path = bundled.split_gguf_path(gguf, cache)
    assert path.read_bytes() == b"GGUF first|second" and path.parent == cache / "gguf"
    assert not list(path.parent.glob(".fake.gguf.*")), "temp file left behind"
    stamp = path.with_name("fake.gguf.sha256").read_text()
    assert bundled.split_gguf_path(gguf, cache) == path and path.with_name("fake.gguf.sha256").read_text() == stamp
    path.write_bytes(b"GGUF first|")  # an interrupted copy: rebuilt, never loaded
    assert bundled.split_gguf_path(gguf, cache).read_bytes() == b"GGUF first|second"
    path.write_bytes(b"GGUF first|secont")  # same size, other bytes, an mtime the stamp does not know
    os.utime(path, ns=(1, 1))
    assert bundled.split_gguf_path(gguf, cache).read_bytes() == b"GGUF first|second"


def test_split_gguf_with_wrong_or_missing_parts_is_refused(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from voxserve import bundled

    gguf = _fake_split_gguf(tmp_path, monkeypatch)
    with pytest.raises(bundled.BundledModelMissing, match="SHA-256"):
        bundled.split_gguf_path(dataclasses.replace(gguf, sha256="0" * 64), tmp_path / "cache")
    assert not (tmp_path / "cache" / "gguf" / "fake.gguf").exists()
    (tmp_path / "fake_part2" / "data" / "part02.bin").unlink()
    with pytest.raises(bundled.BundledModelMissing, match="missing"):
        bundled.split_gguf_path(gguf, tmp_path / "cache")


def test_real_bundled_chat_model_is_installed() -> None:
    from voxserve import bundled

    assert bundled.QWEN_CODER_05B.is_installed()
    sizes = sum(path.stat().st_size for path in bundled.QWEN_CODER_05B.sources())
    assert sizes == bundled.QWEN_CODER_05B.size


def test_malloc_tuning_applies_on_glibc_and_is_harmless_elsewhere() -> None:
    import platform

    applied = process_memory.tune()
    assert applied == (platform.libc_ver()[0] == "glibc")
    process_memory.release()  # gives free heap pages back; never fails
    assert Settings().malloc_tuning and Sampling().temperature == 0.0 == Settings().chat_temperature


def test_piper_session_gives_its_arena_back_after_each_run() -> None:
    from voxserve.engines.piper_tts import _ArenaShrinkingSession

    class Session:
        def __init__(self) -> None:
            self.options: Any = None
            self.inputs = ["input", "input_lengths", "scales"]

        def run(self, outputs: Any, feeds: Any, run_options: Any = None) -> list[Any]:
            self.options = run_options
            return [feeds]

    inner = Session()
    session = _ArenaShrinkingSession(inner)  # type: ignore[arg-type]
    assert session.run(None, {"input": 1}) == [{"input": 1}]
    assert inner.options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert session.inputs == inner.inputs  # everything else is the session's own
