"""Accuracy floor on real recordings (dev-speech), and transcripts that do not depend on how they are asked for.

The bounds are the word (or character) error rates measured with the final code on these slices plus a
margin; `benchmarks/stt.py` measures the whole set against plain faster-whisper.
"""

from __future__ import annotations

import io
import sys
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.conftest import Server
from voxserve.languages import LANGUAGES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import dev_speech

if not (dev_speech.DEV_SPEECH / "manifest.jsonl").exists():
    pytest.fail(f"dev-speech is missing at {dev_speech.DEV_SPEECH} (../shared beside the repository)")

CLIPS = {clip.id: clip for clip in dev_speech.clips()}

# Twelve English clips (LibriSpeech test-other and clean, LJ Speech, LibriTTS): about 80 s.
ENGLISH_SLICE = (
    "en_ls_test-other_1688-142285-0003",
    "en_ls_test-other_1998-15444-0001",
    "en_ls_test-other_2414-128291-0005",
    "en_ls_test-other_3005-163389-0000",
    "en_ls_test-other_3080-5032-0001",
    "en_ls_test-other_3331-159605-0003",
    "en_ls_test-other_367-130732-0001",
    "en_ls_test-clean_1221-135766-0002",
    "en_ls_train-clean-100_332-128985-0000",
    "en_ljspeech_LJ049-0110",
    "en_libritts_8455_210777_000067_000000",
    "en_picovoice_cheetah_dc88f0f9",
)
OTHER_SLICE = (
    "de_picovoice_cheetah_74b2ba33",
    "fr_picovoice_cheetah_3cc7f96c",
    "it_picovoice_cheetah_e5987c0e",
    "pt_picovoice_cheetah_74b536b1",
    "zh_aishell_valle_prompt",
    "de_librivox_simplicissimus_04",
)


def flac(clip: dev_speech.Clip) -> tuple[str, bytes]:
    return (clip.path.name, clip.path.read_bytes())


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize(("model", "bound"), [("whisper-base", 0.08), ("whisper-tiny.en", 0.09)])
def test_english_error_rate_on_real_speech(client: OpenAI, model: str, bound: float) -> None:
    scores = []
    for clip_id in ENGLISH_SLICE:
        clip = CLIPS[clip_id]
        result = client.audio.transcriptions.create(model=model, file=flac(clip), response_format="verbose_json")
        assert result.language == "english", (clip_id, result.language)
        scores.append(dev_speech.score(clip.text, result.text, "en"))
    total = dev_speech.total(scores)
    assert total.rate <= bound, f"{model}: WER {total.rate:.2%} ({total.errors}/{total.units}) > {bound:.0%}"


def test_other_languages_detected_and_transcribed(client: OpenAI) -> None:
    scores = []
    for clip_id in OTHER_SLICE:
        clip = CLIPS[clip_id]
        result = client.audio.transcriptions.create(
            model="whisper-base", file=flac(clip), response_format="verbose_json"
        )
        assert result.language == LANGUAGES[clip.lang], (clip_id, result.language)
        scores.append(dev_speech.score(clip.text, result.text, clip.lang))
    total = dev_speech.total(scores)
    assert total.rate <= 0.12, f"WER/CER {total.rate:.2%} ({total.errors}/{total.units})"


@pytest.fixture(scope="module")
def reading() -> bytes:
    """The first 65 s of the long LJ Speech reading: three windows, where asking for word timestamps
    used to move Whisper's window boundaries and change words."""
    clip = CLIPS["en_long_ljspeech_LJ001-0001-0032"]
    return wav(clip.audio[: 65 * 16000])


def test_text_is_the_same_with_and_without_logprobs(client: OpenAI, reading: bytes) -> None:
    model = "whisper-tiny.en"
    plain = client.audio.transcriptions.create(model=model, file=("reading.wav", reading)).text
    with_logprobs = client.audio.transcriptions.create(model=model, file=("reading.wav", reading), include=["logprobs"])
    assert with_logprobs.logprobs
    assert with_logprobs.text == plain
    words = client.audio.transcriptions.create(
        model=model, file=("reading.wav", reading), response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words.text == plain and words.words
    # A stream plans a shorter first chunk (so its first delta comes early): its text is its own, and
    # logprobs must not change it either.
    streamed = list(client.audio.transcriptions.create(model=model, file=("reading.wav", reading), stream=True))
    events = list(
        client.audio.transcriptions.create(
            model=model, file=("reading.wav", reading), include=["logprobs"], stream=True
        )
    )
    assert events[-1].type == "transcript.text.done" and events[-1].text == streamed[-1].text
    assert dev_speech.score(plain, events[-1].text, "en").rate < 0.05
    assert dev_speech.score(CLIPS["en_long_ljspeech_LJ001-0001-0032"].text, plain, "en").units > 0


def test_stream_delivers_the_first_chunk_early(server: Server, reading: bytes) -> None:
    """Deltas leave as each chunk is decoded: the first one well before the end of a 65 s reading."""
    start = time.monotonic()
    arrivals: list[tuple[float, str]] = []
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/audio/transcriptions",
        files={"file": ("reading.wav", reading)},
        data={"model": "whisper-base", "stream": "true"},
        timeout=300,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic() - start, line))
    first, total = arrivals[0][0], arrivals[-1][0]
    assert '"transcript.text.done"' in arrivals[-1][1]
    # The target (benchmarks/stt.py) is 25% on a 60 s recording; the slack is for shared CI cores.
    assert first < 0.5 * total, (first, total)
    assert len(arrivals) > 4


def test_short_clip_with_two_sentences_streams_more_than_one_delta(client: OpenAI) -> None:
    clip = CLIPS["en_ls_test-other_2033-164914-0004"]  # "By Allah replied the fireman. I tell thee the truth"
    events = list(client.audio.transcriptions.create(model="whisper-base", file=flac(clip), stream=True))
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2, [d.delta for d in deltas]
