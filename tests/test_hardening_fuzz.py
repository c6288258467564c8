"""Property-based fuzzing of every endpoint's fields (hypothesis), against the real session server.

Whatever a client sends: no 5xx, no FastAPI `detail` body, every error in the OpenAI envelope with a
4xx status and an `x-request-id`, and every 200 complete (an event stream never ends in an error
event). Examples are derandomized and bounded, so a run is deterministic and takes a minute or two.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.audio_tools import encode, speak, wav_bytes
from tests.conftest import Server
from voxserve.audio.decode import decode_audio
from voxserve.errors import InvalidRequest

_FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples)


# Values of the wrong kind for any field.
odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
# The same, with numbers small enough that a valid chat stays short (max_tokens=2**70 generates to the end
# of the context window: correct, and 40 s of CPU).
odd_small = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=12),
    st.floats(min_value=-1e6, max_value=1e6),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
# Any text, lone surrogates and control characters included (sent as JSON escapes).
any_text = st.text(alphabet=st.characters(codec=None), max_size=40)
MISSING = object()


def mutated(
    base: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]], keep: tuple[str, ...] = ()
) -> st.SearchStrategy[dict[str, Any]]:
    """A valid request with up to three of its fields replaced (or removed, unless in `keep`): each
    example reaches the code behind validation instead of stopping at the first missing field."""
    change = st.one_of(
        *[
            st.tuples(st.just(key), value if key in keep else st.one_of(value, st.just(MISSING)))
            for key, value in fields.items()
        ]
    )

    def apply(changes: list[tuple[str, Any]]) -> dict[str, Any]:
        body = dict(base)
        for key, value in changes:
            if value is MISSING:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    return st.lists(change, max_size=3).map(apply)


def check(response: httpx.Response) -> None:
    """The properties every answer must have, whatever was sent."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers.get("x-request-id", "").startswith("req_")
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        return
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data: ") and line != "data: [DONE]":
                event = json.loads(line[len("data: ") :])
                assert "error" not in event, event


def post_json(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as any JSON library may send them.
    raw = json.dumps(body, ensure_ascii=True)
    return httpx.post(
        f"{server.base_url}{path}", content=raw, headers={"content-type": "application/json"}, timeout=120
    )


@pytest.fixture(scope="module")
def clip() -> bytes:
    samples, rate = speak("Hello there.")
    return wav_bytes(samples, rate)


# --- /v1/audio/speech ------------------------------------------------------------------------------

speech_bodies = mutated(
    {"model": "tts-1", "voice": "alloy", "input": "Hi there.", "response_format": "pcm"},
    {
        "model": st.one_of(st.sampled_from(["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "piper", "nope", ""]), odd),
        "input": st.one_of(any_text, st.sampled_from(["Hi.", " ", "🎉", "s'" * 220]), odd),
        "voice": st.one_of(
            st.sampled_from(["alloy", "coral", "en_US-joe-medium", "nope", ""]),
            st.fixed_dictionaries({"id": st.one_of(st.sampled_from(["alloy", "x"]), odd)}),
            odd,
        ),
        "response_format": st.one_of(st.sampled_from(["mp3", "opus", "aac", "flac", "wav", "pcm", "mp4"]), odd),
        "speed": st.one_of(st.floats(0.1, 5.0), odd),
        "stream_format": st.one_of(st.sampled_from(["audio", "sse", "text"]), odd),
        "stream": odd,
        "instructions": st.one_of(any_text, odd),
        "extra": odd,
    },
)


@fuzz(70)
@given(body=speech_bodies)
def test_fuzz_speech(server: Server, body: dict[str, Any]) -> None:
    check(post_json(server, "/v1/audio/speech", body))


# What has broken text-to-speech engines: C-string ends, escape sequences, emoji sequences, Piper's own
# phoneme syntax, and the shapes that overflow espeak-ng's word buffer.
NASTY_TEXTS = ["hello\x00world", "\x1b[31mred", "👨‍👩‍👧🇺🇸", "[[ həˈloʊ ]]", "s'" * 220, "x." * 120, "ж." * 60, "\ud800"]
speech_text = st.one_of(
    st.sampled_from(NASTY_TEXTS),
    st.text(
        alphabet=st.one_of(st.sampled_from("\x00\x07\x1b\x85\u200d\ufe0f🎉.' s[]"), st.characters(codec=None)),
        max_size=60,
    ),
    st.builds(lambda unit, n: unit * n, st.text(min_size=1, max_size=2), st.integers(20, 110)),
)


@fuzz(30)
@given(text=speech_text, stream=st.booleans(), fmt=st.sampled_from(["pcm", "mp3", "wav", "opus"]))
def test_fuzz_speech_input(server: Server, text: str, stream: bool, fmt: str) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": text, "response_format": fmt, "stream": stream}
    response = post_json(server, "/v1/audio/speech", body)
    check(response)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert len(response.content) > 0


# --- /v1/audio/transcriptions and /v1/audio/translations ---------------------------------------------

form_text = st.one_of(st.text(max_size=12), st.sampled_from(["", "true", "false", "1", "-1", "1e309", "nan"]))
transcription_fields = mutated(
    {"model": "whisper-1"},
    {
        "model": st.one_of(st.sampled_from(["whisper-1", "gpt-4o-transcribe", "whisper-tiny.en", "nope"]), form_text),
        "response_format": st.one_of(st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"]), form_text),
        "temperature": st.one_of(st.sampled_from(["0", "0.3", "1", "2", "-1"]), form_text),
        "language": st.one_of(st.sampled_from(["en", "de", "EN", "xx", ""]), form_text),
        "prompt": st.text(max_size=60),
        "stream": st.one_of(st.sampled_from(["true", "false"]), form_text),
        "include[]": st.one_of(st.just("logprobs"), form_text),
        "timestamp_granularities[]": st.one_of(st.sampled_from(["word", "segment"]), form_text),
        "chunking_strategy": st.one_of(
            st.sampled_from(["auto", '{"type": "server_vad"}', '{"type": "server_vad", "threshold": 9}', "{"]),
            form_text,
        ),
        "chunking_strategy[type]": st.one_of(st.just("server_vad"), form_text),
        "chunking_strategy[threshold]": form_text,
        "extra[a][b]": form_text,
    },
)


def _files(kind: str, clip: bytes) -> dict[str, Any] | None:
    if kind == "none":
        return None
    data = {
        "clip": clip,
        "empty": b"",
        "garbage": b"not audio at all " * 20,
        "truncated": clip[:300],
    }[kind]
    return {"file": ("audio.wav", data)}


@fuzz(60)
@given(
    fields=transcription_fields,
    file_kind=st.sampled_from(["clip", "clip", "clip", "empty", "garbage", "truncated", "none"]),
)
def test_fuzz_transcriptions(server: Server, clip: bytes, fields: dict[str, str], file_kind: str) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/audio/transcriptions", data=fields, files=_files(file_kind, clip), timeout=120
    )
    check(response)


@fuzz(25)
@given(
    fields=mutated(
        {"model": "whisper-1"},
        {
            "model": st.one_of(st.sampled_from(["whisper-1", "whisper-tiny.en", "nope"]), form_text),
            "response_format": st.one_of(st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"]), form_text),
            "temperature": form_text,
            "prompt": st.text(max_size=30),
            "file": form_text,  # a text field where the file should be
        },
    ),
    file_kind=st.sampled_from(["clip", "clip", "garbage", "none"]),
)
def test_fuzz_translations(server: Server, clip: bytes, fields: dict[str, str], file_kind: str) -> None:
    files = _files(file_kind, clip) if "file" not in fields else None
    check(httpx.post(f"{server.base_url}/v1/audio/translations", data=fields, files=files, timeout=120))


# --- /v1/chat/completions --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def question_b64(clip: bytes) -> str:
    import base64

    return base64.b64encode(clip).decode()


def chat_bodies(audio_b64: str) -> st.SearchStrategy[dict[str, Any]]:
    input_audio = st.fixed_dictionaries(
        {},
        optional={
            "data": st.one_of(st.sampled_from([audio_b64, "!!!notbase64", "", "UklGRg=="]), odd_small),
            "format": st.one_of(st.sampled_from(["wav", "mp3", "flac"]), odd_small),
        },
    )
    part = st.one_of(
        st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(any_text, odd_small)}),
        st.fixed_dictionaries({"type": st.just("input_audio"), "input_audio": st.one_of(input_audio, odd_small)}),
        st.fixed_dictionaries({"type": st.one_of(st.sampled_from(["image_url", "file"]), odd_small)}),
        odd_small,
    )
    message = st.one_of(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "developer", "tool"])},
            optional={
                "content": st.one_of(any_text, st.lists(part, max_size=3), odd_small),
                "audio": st.one_of(st.fixed_dictionaries({"id": st.one_of(st.text(max_size=8), odd_small)}), odd_small),
                "name": odd_small,
            },
        ),
        odd_small,
    )
    return mutated(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        {
            # Never absent, null or <= 0: each lets the model talk to the end of its context (correct, slow).
            "max_tokens": st.one_of(st.integers(1, 12), st.text(max_size=5), st.lists(st.integers(), max_size=2)),
            "model": st.one_of(
                st.sampled_from(["gpt-4o-audio-preview", "gpt-4o-mini", "smollm2-135m", "x"]), odd_small
            ),
            "messages": st.one_of(st.lists(message, max_size=3), odd_small),
            "stream": odd_small,
            "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": odd_small}), odd_small),
            "modalities": st.one_of(st.lists(st.sampled_from(["text", "audio", "video"]), max_size=2), odd_small),
            "audio": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "voice": st.one_of(st.sampled_from(["alloy", "nope"]), odd_small),
                        "format": st.one_of(st.sampled_from(["wav", "pcm16", "mp3", "ogg"]), odd_small),
                    },
                ),
                odd_small,
            ),
            "temperature": odd_small,
            "top_p": odd_small,
            "stop": odd_small,
            "seed": odd_small,
            "n": odd_small,
            "tools": odd_small,
            "response_format": odd_small,
        },
        keep=("max_tokens",),
    )


def test_fuzz_chat(server: Server, question_b64: str) -> None:
    @settings(fuzz(50))
    @given(body=chat_bodies(question_b64))
    def run(body: dict[str, Any]) -> None:
        check(post_json(server, "/v1/chat/completions", body))

    run()


# --- the decoder, in-process, on damaged real files --------------------------------------------------


@pytest.fixture(scope="module")
def encoded_clips() -> dict[str, bytes]:
    samples, rate = speak("Testing one two three.")
    return {
        "wav": wav_bytes(samples, rate),
        "mp3": encode(samples, rate, "mp3", "libmp3lame"),
        "flac": encode(samples, rate, "flac", "flac"),
        "ogg": encode(samples, rate, "ogg", "libopus", 48000),
        "m4a": encode(samples, rate, "ipod", "aac"),
        "webm": encode(samples, rate, "webm", "libopus", 48000),
    }


edits = st.lists(
    st.tuples(st.sampled_from(["set", "cut", "insert", "huge"]), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    min_size=1,
    max_size=6,
)


@fuzz(300)
@given(kind=st.sampled_from(["wav", "mp3", "flac", "ogg", "m4a", "webm"]), changes=edits)
def test_fuzz_decoder_on_damaged_files(encoded_clips: dict[str, bytes], kind: str, changes: list) -> None:
    data = bytearray(encoded_clips[kind])
    for op, where, blob in changes:
        at = int(where * (len(data) - 1))
        if op == "set":
            data[at : at + len(blob)] = blob
        elif op == "cut":
            del data[at : at + len(blob) * 4]
        elif op == "insert":
            data[at:at] = blob
        else:  # a length or count field blown up
            data[at : at + 4] = b"\xff\xff\xff\x7f"
    try:
        audio = decode_audio(io.BytesIO(bytes(data)), max_seconds=30)
    except InvalidRequest:
        return
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0 < audio.size <= 30 * 16000
