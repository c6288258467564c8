"""Speech to text through the official openai SDK against a real server and real bundled models."""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.audio_tools import DATA, encode, silence, speak, wav_bytes, wer, white_noise
from tests.conftest import Server

SRT_CUE = re.compile(r"^(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)$")
VTT_TIME = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$")


def _seconds(stamp: str) -> float:
    h, m, rest = stamp.replace(",", ".").split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


@pytest.mark.parametrize("model", ["whisper-base", "whisper-tiny.en"])
def test_accuracy_wer(client: OpenAI, english: tuple[Path, str], model: str) -> None:
    path, text = english
    result = client.audio.transcriptions.create(model=model, file=path)
    assert wer(text, result.text) <= 0.15, result.text


def test_json_has_duration_usage_for_whisper_1(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, text = short_english
    result = client.audio.transcriptions.create(model="whisper-1", file=path)
    assert wer(text, result.text) <= 0.15
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds >= 1


def test_json_has_token_usage_for_gpt_4o_alias(client: OpenAI, short_english: tuple[Path, str]) -> None:
    result = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=short_english[0])
    usage = result.usage
    assert usage is not None and usage.type == "tokens"
    assert usage.output_tokens > 0 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_text_format(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, text = short_english
    body = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="text")
    assert isinstance(body, str) and body.endswith("\n")
    assert wer(text, body) <= 0.15


def test_srt_format_parses(client: OpenAI, english: tuple[Path, str]) -> None:
    path, text = english
    body = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="srt")
    cues = [c for c in body.strip().split("\n\n") if c]
    assert len(cues) >= 2
    last_end = 0.0
    words = []
    for number, cue in enumerate(cues, start=1):
        match = SRT_CUE.match(cue)
        assert match, cue
        assert int(match.group(1)) == number
        start, end = _seconds(match.group(2)), _seconds(match.group(3))
        assert last_end - 0.01 <= start < end
        last_end = end
        words.append(match.group(4))
    assert wer(text, " ".join(words)) <= 0.15


def test_vtt_format_parses(client: OpenAI, english: tuple[Path, str]) -> None:
    path, _ = english
    body = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="vtt")
    assert body.startswith("WEBVTT\n\n")
    blocks = [b for b in body[len("WEBVTT\n\n") :].strip().split("\n\n") if b]
    assert len(blocks) >= 2
    for block in blocks:
        timing, cue_text = block.split("\n", 1)
        match = VTT_TIME.match(timing)
        assert match, block
        assert _seconds(match.group(1)) < _seconds(match.group(2))
        assert cue_text.strip()


def test_verbose_json_segments(client: OpenAI, english: tuple[Path, str]) -> None:
    path, text = english
    result = client.audio.transcriptions.create(model="whisper-1", file=path, response_format="verbose_json")
    assert result.language == "english"
    assert 10 < result.duration < 30
    assert wer(text, result.text) <= 0.15
    assert result.segments and result.words is None
    raw = result.model_dump()
    assert raw["task"] == "transcribe"
    for index, segment in enumerate(result.segments):
        assert segment.id == index
        assert 0 <= segment.start < segment.end <= result.duration + 0.5
        assert segment.tokens and all(isinstance(t, int) for t in segment.tokens)
        assert segment.avg_logprob < 0
        assert segment.compression_ratio > 0
        assert 0 <= segment.no_speech_prob <= 1
        assert segment.temperature == 0.0
    assert "".join(s.text for s in result.segments).strip() == result.text


def test_verbose_json_word_and_segment_granularities(client: OpenAI, english: tuple[Path, str]) -> None:
    path, text = english
    words_only = client.audio.transcriptions.create(
        model="whisper-1", file=path, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words_only.words and not words_only.segments
    both = client.audio.transcriptions.create(
        model="whisper-1",
        file=path,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert both.words and both.segments
    assert len(both.words) >= len(text.split()) - 3
    previous = 0.0
    for word in both.words:
        assert word.word and word.word == word.word.strip()
        assert previous - 0.01 <= word.start <= word.end
        previous = word.start
    assert wer(text, " ".join(w.word for w in both.words)) <= 0.15


def test_stream_events(client: OpenAI, server: Server, english: tuple[Path, str]) -> None:
    path, _ = english
    plain = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path).text
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path, stream=True))
    types = [e.type for e in events]
    assert types[0] == "transcript.text.delta"
    assert types[-1] == "transcript.text.done"
    assert types.count("transcript.text.done") == 1
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2  # one per segment: five sentences are more than one segment
    done = events[-1]
    assert "".join(d.delta for d in deltas) == done.text
    assert done.text == plain
    assert done.usage is not None and done.usage.type == "tokens" and done.usage.output_tokens > 0


def test_stream_for_whisper_1_too(client: OpenAI, short_english: tuple[Path, str]) -> None:
    events = list(client.audio.transcriptions.create(model="whisper-1", file=short_english[0], stream=True))
    assert events[0].type == "transcript.text.delta" and events[-1].type == "transcript.text.done"


def test_stream_sends_segments_before_the_end(server: Server, audio_dir: Path) -> None:
    """Whisper decodes 30 s windows; on longer audio each window's segments leave as soon as that
    window is decoded, so the first delta arrives well before the done event."""
    import time

    import numpy as np

    from tests.audio_tools import SENTENCES

    samples, rate = speak(" ".join(SENTENCES * 3))
    long_audio = np.concatenate([samples, silence(1.0, rate), samples])
    assert len(long_audio) / rate > 45
    arrivals: list[tuple[float, str]] = []
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("long.wav", wav_bytes(long_audio, rate))},
        data={"model": "whisper-tiny.en", "stream": "true"},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), json.loads(line[6:])["type"]))
    first = arrivals[0][0]
    last = arrivals[-1][0]
    assert arrivals[-1][1] == "transcript.text.done"
    assert last - first > 0.2, "all events arrived together: the stream was buffered"


def test_logprobs_on_json_and_stream(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, _ = short_english
    result = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path, include=["logprobs"])
    assert result.logprobs
    for lp in result.logprobs:
        assert lp.logprob is not None and lp.logprob <= 0
        assert lp.bytes == list((lp.token or "").encode())
    events = list(
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path, include=["logprobs"], stream=True)
    )
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert all(d.logprobs for d in deltas)
    assert all(lp.logprob <= 0 for d in deltas for lp in d.logprobs or [])
    assert events[-1].logprobs and len(events[-1].logprobs) == sum(len(d.logprobs or []) for d in deltas)


def test_prompt_and_temperature_accepted(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, text = short_english
    result = client.audio.transcriptions.create(
        model="whisper-1", file=path, prompt="A pangram about a fox.", temperature=0.2, language="en"
    )
    assert wer(text, result.text) <= 0.2


@pytest.mark.parametrize(
    ("name", "container", "codec", "rate", "channels"),
    [
        ("a.flac", "flac", "flac", 44100, 1),
        ("a.m4a", "ipod", "aac", 44100, 2),
        ("a.mp3", "mp3", "libmp3lame", 44100, 2),
        ("a.mp4", "mp4", "aac", 48000, 1),
        ("a.mpeg", "mp3", "libmp3lame", 22050, 1),
        ("a.mpga", "mp3", "libmp3lame", 16000, 1),
        ("a.oga", "ogg", "libopus", 24000, 1),
        ("a.ogg", "ogg", "libopus", 48000, 2),
        ("a.wav", "wav", "pcm_s16le", 8000, 2),
        ("a.webm", "webm", "libopus", 48000, 1),
    ],
)
def test_every_input_container(client: OpenAI, name: str, container: str, codec: str, rate: int, channels: int) -> None:
    text = "Please call me back when you get home tonight."
    samples, voice_rate = speak(text)
    data = encode(samples, voice_rate, container, codec, out_rate=rate, channels=channels)
    result = client.audio.transcriptions.create(model="whisper-tiny.en", file=(name, data))
    assert wer(text, result.text) <= 0.2, (name, result.text)


def test_container_is_sniffed_not_taken_from_name(client: OpenAI) -> None:
    text = "The library opens at nine in the morning."
    samples, rate = speak(text)
    mp3 = encode(samples, rate, "mp3", "libmp3lame")
    result = client.audio.transcriptions.create(model="whisper-tiny.en", file=("recording.wav", mp3))
    assert wer(text, result.text) <= 0.2
    # Raw bytes: the SDK sends them named "upload", with no extension at all.
    assert wer(text, client.audio.transcriptions.create(model="whisper-tiny.en", file=mp3).text) <= 0.2


@pytest.mark.parametrize("model", ["whisper-base", "whisper-tiny.en"])
def test_silence_and_noise_give_empty_text(client: OpenAI, model: str) -> None:
    for samples in (silence(30), white_noise(30)):
        result = client.audio.transcriptions.create(model=model, file=("quiet.wav", wav_bytes(samples, 16000)))
        assert result.text == ""
        events = list(
            client.audio.transcriptions.create(model=model, file=("quiet.wav", wav_bytes(samples, 16000)), stream=True)
        )
        assert events[-1].type == "transcript.text.done" and events[-1].text == ""


def test_server_vad_chunking_strategy(client: OpenAI, english: tuple[Path, str]) -> None:
    path, text = english
    for strategy in ("auto", {"type": "server_vad", "threshold": 0.4, "silence_duration_ms": 300}):
        result = client.audio.transcriptions.create(model="whisper-1", file=path, chunking_strategy=strategy)
        assert wer(text, result.text) <= 0.15


def test_german_language_detection_and_translation(client: OpenAI) -> None:
    path = DATA / "german.flac"
    verbose = client.audio.transcriptions.create(model="whisper-base", file=path, response_format="verbose_json")
    assert verbose.language == "german"
    assert "deutschland" in verbose.text.lower()
    translated = client.audio.translations.create(model="whisper-1", file=path)
    lowered = translated.text.lower()
    assert "germany" in lowered and "morning" in lowered
    assert "deutschland" not in lowered


def test_translation_formats(client: OpenAI) -> None:
    path = DATA / "german.flac"
    verbose = client.audio.translations.create(model="whisper-1", file=path, response_format="verbose_json")
    assert verbose.language == "english" and verbose.segments
    assert verbose.model_dump()["task"] == "translate"
    text = client.audio.translations.create(model="whisper-1", file=path, response_format="text")
    assert isinstance(text, str) and "germany" in text.lower()
    srt = client.audio.translations.create(model="whisper-1", file=path, response_format="srt")
    assert SRT_CUE.match(srt.strip().split("\n\n")[0])
    vtt = client.audio.translations.create(model="whisper-1", file=path, response_format="vtt")
    assert vtt.startswith("WEBVTT")


def test_forced_language(client: OpenAI) -> None:
    verbose = client.audio.transcriptions.create(
        model="whisper-base", file=DATA / "german.flac", language="de", response_format="verbose_json"
    )
    assert verbose.language == "german"


def test_models_endpoints(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {
        "whisper-base",
        "whisper-tiny.en",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
    } <= ids
    model = client.models.retrieve("whisper-1")
    assert model.id == "whisper-1" and model.object == "model"


def test_configured_models_aliases_preload_and_idle_unload(
    start_server: Callable[..., Server], short_english: tuple[Path, str]
) -> None:
    """A local CTranslate2 directory as a new model id, aliases pointed elsewhere, preload, and TTL unload."""
    import time

    from voxserve.bundled import whisper_tiny_en_dir

    server = start_server(
        {
            "VOXSERVE_WHISPER_MODELS": json.dumps({"my-local-tiny": str(whisper_tiny_en_dir())}),
            "VOXSERVE_DEFAULT_STT_MODEL": "my-local-tiny",
            "VOXSERVE_STT_ALIASES": "whisper-1,my-alias",
            "VOXSERVE_PRELOAD": "whisper-tiny.en",
            "VOXSERVE_MODEL_TTL": "1",
        }
    )
    client = server.client()
    assert client.models.retrieve("my-alias").model_dump()["root"] == "my-local-tiny"
    assert "whisper-tiny.en" in httpx.get(f"{server.base_url}/health").json()["loaded_models"]
    path, text = short_english
    assert wer(text, client.audio.transcriptions.create(model="my-alias", file=path).text) <= 0.2
    deadline = time.monotonic() + 10
    while httpx.get(f"{server.base_url}/health").json()["loaded_models"] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert httpx.get(f"{server.base_url}/health").json()["loaded_models"] == []
    # Unloaded is not gone: the next request loads it again.
    assert wer(text, client.audio.transcriptions.create(model="my-local-tiny", file=path).text) <= 0.2


def test_language_detection_shares_the_first_encoder_pass(model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto-detected language costs no second encoder pass over the first 30 s window."""
    from faster_whisper import WhisperModel

    from voxserve.audio.decode import decode_audio
    from voxserve.bundled import whisper_base_dir
    from voxserve.engines.whisper import TranscribeOptions, WhisperEngine

    # Whisper's full window: a trimmed one may be encoded again in full when Whisper is unsure of it.
    engine = WhisperEngine.load("whisper-base", str(whisper_base_dir(model_cache)), cpu_threads=2, trim_padding=False)
    passes = 0
    real_encode = WhisperModel.encode

    def counting(self: WhisperModel, features: object) -> object:
        nonlocal passes
        passes += 1
        return real_encode(self, features)

    monkeypatch.setattr(WhisperModel, "encode", counting)
    with (DATA / "german.flac").open("rb") as source:
        transcript = engine.start(decode_audio(source), TranscribeOptions()).run_to_end()
    assert transcript.language == "de" and "Deutschland" in transcript.text
    assert passes == 1


def test_fallback_decodes_the_same_every_time(model_cache: Path) -> None:
    """Same audio, same options, the same text: the fallback after a failed decode does not sample.

    German translated on a window trimmed to its audio plus 3 s fails Whisper's log-probability check, so
    this goes through the fallback; with CTranslate2's sampler (one generator per worker thread, not
    reseedable per request) two requests in one test run read differently, one without "Germany"."""
    from voxserve.audio.decode import decode_audio
    from voxserve.bundled import whisper_base_dir
    from voxserve.engines.whisper import DecoderSettings, TranscribeOptions, WhisperEngine

    trimmed = DecoderSettings(short_window_frames=0)  # the short window, not a clip's 15 s one
    engine = WhisperEngine.load("whisper-base", str(whisper_base_dir(model_cache)), cpu_threads=2, settings=trimmed)
    with (DATA / "german.flac").open("rb") as source:
        audio = decode_audio(source)
    texts, fallbacks = set(), 0
    for _ in range(3):
        run = engine.start(audio, TranscribeOptions(task="translate"))
        texts.add(tuple(tuple(segment.tokens) for segment in run.run_to_end().segments))
        fallbacks += run.fallbacks
    assert fallbacks >= 3 and len(texts) == 1
    assert "germany" in run.transcript.text.lower()


def test_a_chunk_decoded_as_text_only_loses_no_sentence(client: OpenAI) -> None:
    """The 70 s Spanish reading's last chunk, decoded without timestamps, used to end one sentence early
    ("Valdemoro, 20 de Septiembre de 1881."); the coverage check decodes the rest of the chunk again."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import dev_speech

    clip = next(c for c in dev_speech.clips(sets=["multi"]) if c.id == "es_librivox_capitan_veneno")
    result = client.audio.transcriptions.create(
        model="whisper-base", file=(clip.path.name, clip.path.read_bytes()), response_format="verbose_json"
    )
    assert result.language == "spanish"
    assert "1881" in result.text, result.text[-120:]
    assert "Valdemoro" in result.text.rsplit("Pedro", 1)[-1], result.text[-120:]
    segments = result.segments or []
    assert all(a.start <= a.end <= b.start + 0.01 for a, b in itertools.pairwise(segments)), [
        (s.start, s.end) for s in segments
    ]


def test_a_short_clip_is_encoded_once_at_the_short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip of one chunk: one encoder pass over a window of `short_window_frames` (15 s), not the 30 s
    window plain Whisper pads to, and no second pass when the decode needed no fallback."""
    import sys

    from faster_whisper import WhisperModel

    from voxserve.bundled import whisper_tiny_en_dir
    from voxserve.engines.whisper import DecoderSettings, TranscribeOptions, WhisperEngine

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import dev_speech

    clip = min(dev_speech.clips(sets=["en"]), key=lambda c: c.duration)  # about 3 s
    engine = WhisperEngine.load("whisper-tiny.en", str(whisper_tiny_en_dir()), cpu_threads=2)
    frames: list[int] = []
    real_encode = WhisperModel.encode

    def counting(self: WhisperModel, features: Any) -> object:
        frames.append(features.shape[-1])
        return real_encode(self, features)

    monkeypatch.setattr(WhisperModel, "encode", counting)
    run = engine.start(clip.audio, TranscribeOptions())
    text = run.run_to_end().text
    assert run.fallbacks == 0 and frames == [DecoderSettings().short_window_frames], frames
    assert wer(clip.text, text) <= 0.2, text


def test_warm_up_is_opt_in_and_leaves_the_text_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """`VOXSERVE_WHISPER_WARM_UP` (off by default: it holds memory) warms the engine at load, and a warmed
    engine reads a clip exactly as it did before."""
    import sys

    from voxserve.bundled import whisper_tiny_en_dir
    from voxserve.config import Settings
    from voxserve.engines.catalog import _whisper_spec
    from voxserve.engines.whisper import TranscribeOptions, WhisperEngine

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import dev_speech

    warmed: list[WhisperEngine] = []
    real_warm_up = WhisperEngine.warm_up

    def counting(self: WhisperEngine) -> None:
        warmed.append(self)
        real_warm_up(self)

    monkeypatch.setattr(WhisperEngine, "warm_up", counting)
    cold = _whisper_spec(Settings(cpu_threads=2), "whisper-tiny.en", whisper_tiny_en_dir).loader()
    assert warmed == []
    clip = min(dev_speech.clips(sets=["en"]), key=lambda c: c.duration)
    before = cold.start(clip.audio, TranscribeOptions()).run_to_end().text
    cold.warm_up()
    assert cold.start(clip.audio, TranscribeOptions()).run_to_end().text == before
    hot = _whisper_spec(Settings(cpu_threads=2, whisper_warm_up=True), "whisper-tiny.en", whisper_tiny_en_dir).loader()
    assert warmed == [cold, hot]


def test_half_batches_are_on_by_default_and_read_long_audio_as_one_batch_does() -> None:
    """`VOXSERVE_WHISPER_HALF_BATCHES` (default on) gives the engine its second, lazily loaded instance of
    the weights; a long stretch reads exactly as it does through one batch at a time."""
    import sys

    from voxserve.bundled import whisper_tiny_en_dir
    from voxserve.config import Settings
    from voxserve.engines.catalog import _whisper_spec
    from voxserve.engines.whisper import TranscribeOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import dev_speech

    paired = _whisper_spec(Settings(cpu_threads=2), "whisper-tiny.en", whisper_tiny_en_dir).loader()
    single = _whisper_spec(
        Settings(cpu_threads=2, whisper_half_batches=False), "whisper-tiny.en", whisper_tiny_en_dir
    ).loader()
    assert paired.pair is not None and single.pair is None
    audio = dev_speech.clips(sets=["long"])[0].audio[: 100 * 16000]
    run = paired.start(audio, TranscribeOptions())
    text = run.run_to_end().text
    assert run.windows >= 3
    assert text == single.start(audio, TranscribeOptions()).run_to_end().text


def test_a_decode_can_be_held_to_a_few_tokens_per_second_of_audio() -> None:
    """`TranscribeOptions.max_tokens_per_second` (realtime live decodes: a reading that loops stops
    there) caps a window's text by its audio's length; no cap reads the whole clip."""
    import sys

    from voxserve.bundled import whisper_tiny_en_dir
    from voxserve.config import Settings
    from voxserve.engines.catalog import _whisper_spec
    from voxserve.engines.whisper import TranscribeOptions

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import dev_speech

    engine = _whisper_spec(Settings(cpu_threads=2), "whisper-tiny.en", whisper_tiny_en_dir).loader()
    clip = next(c for c in dev_speech.clips(sets=["en"]) if 5 <= c.duration <= 10)
    options = TranscribeOptions(beam_size=1, trimmed_only=True, clip_window=False, retry_failed=False)
    whole = engine.start(clip.audio, options).run_to_end()
    capped = engine.start(clip.audio, replace(options, max_tokens_per_second=0.5)).run_to_end()
    tokens = sum(len(s.tokens) for s in capped.segments)
    assert len(whole.text.split()) >= 10
    assert 1 <= tokens <= 8 + math.ceil(0.5 * clip.duration) and len(capped.text.split()) < len(whole.text.split())
    assert whole.text.startswith(capped.text.strip().split()[0])
