"""Unit tests for the realtime pure parts: VAD turn logic, live-transcript stabilisation, keys, session
config, G.711 and the session machine itself (scripted VAD, fake decodes, fake clock and ids)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.realtime_tools import validate
from voxserve.audio.denoise import ADAPTIVE_MIX, NoiseMix, SnrEstimate, StreamingDenoiser, denoise_available
from voxserve.audio.g711 import decode_g711, encode_g711
from voxserve.audio.input_stream import InputAudioStream
from voxserve.engines.admission import EngineGate
from voxserve.engines.live_transcription import LiveTranscript, aligned_end, before_repeat, delta_text, words_of
from voxserve.engines.registry import ModelSpec
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.streaming_vad import FRAME, TurnDetector
from voxserve.engines.whisper import TranscribeOptions
from voxserve.errors import ModelNotFound
from voxserve.realtime.config import TranscriptionSessionConfig, parse_transcription_update
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.session_env import SessionEnv
from voxserve.realtime.tokens import KeyMinter
from voxserve.realtime.transcription import TranscriptionSession
from voxserve.realtime.turn_decoding import DecodeJob, after_context
from voxserve.transcript import Segment, Transcript, Word


def _transcript(text: str, language: str = "en") -> Transcript:
    segment = Segment(0, 0, 0.0, 1.0, " " + text, [1, 2, 3], 0.0, -0.1, 1.0, 0.0)
    return Transcript("transcribe", language, 1.0, [segment] if text else [])


def _timed(*words: tuple[str, float], seconds: float | None = None) -> Transcript:
    """A decode with timed words (word, probability), 0.3 s apart, of `seconds` of audio."""
    timed = [Word(f" {w}", 0.3 * i, 0.3 * (i + 1), p) for i, (w, p) in enumerate(words)]
    duration = seconds if seconds is not None else 0.3 * len(words)
    text = "".join(w.word for w in timed)
    segment = Segment(0, 0, 0.0, duration, text, [1, 2, 3], 0.0, -0.1, 1.0, 0.0, words=timed)
    return Transcript("transcribe", "en", duration, [segment])


# --- turn detection ----------------------------------------------------------------------------------


def test_turn_detector_start_pause_resume_stop() -> None:
    turns = TurnDetector(threshold=0.5, silence_duration_ms=500, pause_ms=200)
    frames_500ms = 500 * 16 // FRAME + 1
    events = turns.push([0.1] * 10 + [0.9] * 20)
    assert [(e.kind, e.sample) for e in events] == [("start", 10 * FRAME)]
    events = turns.push([0.4] * 3)  # between the two thresholds: speech goes on
    assert events == []
    events = turns.push([0.1] * 7)  # 7 frames = 224 ms of silence: a pause, where silence began
    assert [(e.kind, e.sample) for e in events] == [("pause", 33 * FRAME)]
    events = turns.push([0.8])
    assert [e.kind for e in events] == ["resume"]
    events = turns.push([0.05] * frames_500ms)
    kinds = [(e.kind, e.sample) for e in events]
    assert kinds[-1] == ("stop", 41 * FRAME) and ("pause", 41 * FRAME) in kinds
    assert not turns.speaking


def test_turn_detector_ignores_noise_below_threshold() -> None:
    turns = TurnDetector(threshold=0.7)
    assert turns.push([0.6] * 100) == []


# --- live transcript ---------------------------------------------------------------------------------


def test_live_deltas_need_two_agreeing_decodes_and_hold_back_the_edge_word() -> None:
    live = LiveTranscript()
    assert live.update(_transcript("I really lie")) == []
    assert delta_text(live.update(_transcript("I really liked that account"))) == "I really"
    assert delta_text(live.update(_transcript("I really liked that account of"))) == " liked that account"
    rest = live.finish(_transcript("I really liked that account of himself."))
    assert delta_text(rest) == " of himself."
    assert live.text == "I really liked that account of himself."


def test_live_deltas_with_more_agreement_and_a_longer_hold_back() -> None:
    live = LiveTranscript(hold_back=2, agreement=3)
    assert live.update(_transcript("I really liked that")) == []
    assert live.update(_transcript("I really liked that account")) == []  # only two decodes so far
    assert delta_text(live.update(_transcript("I really liked that account of"))) == "I really liked that"
    assert live.update(_transcript("I really liked that a count of him")) == []  # "account" read two ways
    assert delta_text(live.update(_transcript("I really liked that account of him self"))) == ""
    assert delta_text(live.finish(_transcript("I really liked that account of himself."))) == " account of himself."


def test_live_words_two_decodes_are_sure_of_go_out_without_a_third() -> None:
    live = LiveTranscript(hold_back=1, agreement=3, sure_agreement=2, sure_logprob=math.log(0.6))
    assert live.update(_timed(("Hello", 0.9), ("there", 0.5), ("my", 0.9))) == []
    # "Hello" sure in both; "there" agreed on but unsure once: it waits for a third decode.
    assert delta_text(live.update(_timed(("Hello", 0.95), ("there", 0.9), ("my", 0.9), ("friend", 0.8)))) == "Hello"
    assert delta_text(live.update(_timed(("Hello", 0.95), ("there", 0.4), ("my", 0.9), ("friend", 0.9)))) == (
        " there my"
    )
    assert delta_text(live.finish(_timed(("Hello", 1.0), ("there", 1.0), ("my", 1.0), ("friend.", 1.0)))) == (
        " friend."
    )


def test_live_words_too_unsure_wait_even_when_decodes_agree() -> None:
    live = LiveTranscript(hold_back=1, agreement=3, unsure_logprob=math.log(0.3))
    for _ in range(2):
        assert live.update(_timed(("This", 0.9), ("I", 0.9), ("run", 0.2), ("with", 0.9), ("great", 0.9))) == []
    # Three decodes agree, but one of them gave "run" only 0.2: what comes before it goes out.
    assert delta_text(live.update(_timed(("This", 0.9), ("I", 0.9), ("run", 0.5), ("with", 0.9), ("great", 0.9)))) == (
        "This I"
    )
    assert delta_text(live.finish(_timed(("This", 1.0), ("I", 1.0), ("read", 1.0), ("with", 1.0)))) == " read with"


def test_live_words_held_back_by_audio_time() -> None:
    live = LiveTranscript(hold_back=2, agreement=2, hold_back_seconds=0.5)
    live.update(_timed(("one", 0.9), ("two", 0.9), ("three", 0.9), seconds=1.5))
    # "three" ends at 0.9 s of 1.5 s: clear of the edge; by count it would be held (the last 2 words).
    assert delta_text(live.update(_timed(("one", 0.9), ("two", 0.9), ("three", 0.9), ("fo", 0.9), seconds=1.5))) == (
        "one two three"
    )


def test_live_decodes_unsure_of_their_language_are_not_counted() -> None:
    live = LiveTranscript()
    unsure = _transcript("hello there world")
    unsure.language_probability = 0.5
    assert live.update(unsure, 0.9) == []
    assert live.update(_transcript("hello there world"), 0.9) == []  # agrees with nothing sure before it
    assert live.update(unsure, 0.9) == []  # skipped: neither agrees nor breaks the agreement
    assert delta_text(live.update(_transcript("hello there world"), 0.9)) == "hello there"


def test_live_final_that_reads_sent_words_differently_keeps_them() -> None:
    live = LiveTranscript()
    live.update(_transcript("Margaret said Mr. Hell as"))
    sent = delta_text(live.update(_transcript("Margaret said Mr. Hell as he")))
    assert sent == "Margaret said Mr. Hell as"
    rest = delta_text(live.finish(_transcript("Margaret said Mr. Hale, as he returned.")))
    assert rest == " he returned."
    assert live.text == sent + rest


def test_live_decodes_in_different_languages_never_agree() -> None:
    live = LiveTranscript()
    live.update(_transcript("bayala rab", "ar"))
    assert live.update(_transcript("bayala rab qal", "en")) == []
    assert live.update(_transcript("bayala rab qal fi", "en"), min_language_probability=0.9) != []


def test_aligned_end() -> None:
    assert aligned_end([], ["a"]) == 0
    assert aligned_end(["a", "b"], ["a", "b", "c"]) == 2
    assert aligned_end(["a", "x", "c"], ["a", "b", "c", "d"]) == 3
    assert aligned_end(["q"], ["a", "b"]) == 1


# --- keys --------------------------------------------------------------------------------------------


def test_keys_round_trip_expire_and_resist_tampering() -> None:
    minter = KeyMinter("secret")
    key = minter.mint("transcription", {"type": "transcription", "include": None}, expires_at=1000)
    assert key.value.startswith("ek_")
    again = minter.verify(key.value, now=999)
    assert again is not None and again.kind == "transcription" and again.session == key.session
    assert minter.verify(key.value, now=1000) is None  # expired
    assert KeyMinter("other").verify(key.value, now=0) is None  # another server's secret
    assert KeyMinter("secret").verify(key.value, now=0) is not None  # a replica with the same secret
    body, _, signature = key.value.partition(".")
    assert minter.verify(body[:-2] + "xx." + signature, now=0) is None
    assert minter.verify("ek_garbage", now=0) is None


# --- config -------------------------------------------------------------------------------------------


def test_config_updates_merge_and_null_clears() -> None:
    base = TranscriptionSession.default_config("whisper-1")
    ga = parse_transcription_update(
        base, {"type": "transcription", "audio": {"input": {"noise_reduction": {"type": "far_field"}}}}, "whisper-1"
    )
    assert ga.input.noise_reduction is not None and ga.input.turn_detection is not None
    assert ga.input.transcription == base.input.transcription
    cleared = parse_transcription_update(ga, {"audio": {"input": {"turn_detection": None}}}, "whisper-1")
    assert cleared.input.turn_detection is None and cleared.input.noise_reduction is not None
    beta = parse_transcription_update(
        cleared,
        {"input_audio_format": "g711_alaw", "turn_detection": {"type": "semantic_vad", "eagerness": "high"}},
        "whisper-1",
    )
    assert beta.input.format == "g711_alaw"
    assert beta.input.turn_detection is not None and beta.input.turn_detection.effective_silence_ms == 400
    with pytest.raises(ClientEventError) as bad:
        parse_transcription_update(base, {"input_audio_format": "mp3"}, "whisper-1")
    assert bad.value.param == "session.input_audio_format" and bad.value.code == "unsupported_value"


# --- audio --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_round_trip(law: str) -> None:
    tone = (np.sin(np.arange(800) / 8000 * 2 * np.pi * 440) * 8000).astype(np.int16)
    data = encode_g711(tone, law)
    assert len(data) == 800
    back = decode_g711(data, law)
    assert np.max(np.abs(back.astype(int) - tone)) < 300


def test_pcm16_stream_keeps_a_split_sample() -> None:
    stream = InputAudioStream("pcm16")
    pcm = (np.ones(2400) * 1000).astype("<i2").tobytes()
    out = [stream.push(pcm[:1001]), stream.push(pcm[1001:])]
    assert abs(sum(len(o) for o in out) - 1600) <= 32


def test_noise_mix_follows_the_estimated_snr() -> None:
    mix = NoiseMix(full_at=14.0, none_at=22.0)
    assert (mix.wet(10.0), mix.wet(18.0), mix.wet(30.0)) == (1.0, 0.5, 0.0)
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 3) / 16000
    # Speech-like: broadband bursts with quiet gaps, over white noise 10 or 40 dB below the bursts.
    bursts = (np.sin(2 * np.pi * 2 * t) > 0) * rng.standard_normal(t.size) * 0.1
    for floor_db, expected in ((-10, 1.0), (-40, 0.0)):
        estimate = SnrEstimate(16000)
        assert estimate.push(np.zeros(100, np.float32)) is None  # too little heard yet
        noise = rng.standard_normal(t.size) * 0.1 * 10 ** (floor_db / 20)
        snr = estimate.push((bursts + noise).astype(np.float32))
        assert snr is not None and mix.wet(snr) == pytest.approx(expected, abs=0.05)


def test_snr_estimate_rates_a_steady_hum_nearly_clean() -> None:
    """A tonal hum 10 dB below the speech lowers one band's SNR, not all of them as white noise does."""
    rng = np.random.default_rng(3)
    t = np.arange(16000 * 3) / 16000
    bursts = (np.sin(2 * np.pi * 2 * t) > 0) * rng.standard_normal(t.size) * 0.1
    hum = np.sin(2 * np.pi * 300 * t) * 0.1 * np.sqrt(2) * 10 ** (-10 / 20)
    white = rng.standard_normal(t.size) * 0.1 * 10 ** (-10 / 20)
    hummed = SnrEstimate(16000).push((bursts + hum).astype(np.float32))
    noisy = SnrEstimate(16000).push((bursts + white).astype(np.float32))
    assert hummed is not None and noisy is not None
    assert ADAPTIVE_MIX.wet(hummed) == 0.0 and ADAPTIVE_MIX.wet(noisy) == 1.0


@pytest.mark.skipif(not denoise_available(), reason="pyrnnoise is not installed")
def test_adaptive_denoiser_passes_clean_speech_and_denoises_noise() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(16000 * 3) / 16000
    bursts = ((np.sin(2 * np.pi * 2 * t) > 0) * np.sin(2 * np.pi * 220 * t) * 0.3).astype(np.float32)
    clean = StreamingDenoiser()
    out = np.concatenate([clean.push(bursts[i : i + 1600]) for i in range(0, bursts.size, 1600)])
    # Clear input comes out as it went in, lined up with it (the input is delayed as RNNoise's output is).
    assert np.allclose(out[16000:], bursts[16000 : out.size], atol=1e-3)
    noisy = StreamingDenoiser()
    loud_noise = bursts + (rng.standard_normal(t.size) * 0.05).astype(np.float32)
    noisy.push(loud_noise)
    assert noisy.snr_db is not None and noisy.snr_db < 14


@pytest.mark.skipif(not denoise_available(), reason="pyrnnoise is not installed")
def test_denoiser_flush_gives_back_its_lag_and_stays_in_step() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(16000 * 2) / 16000
    bursts = ((np.sin(2 * np.pi * 2 * t) > 0) * rng.standard_normal(t.size) * 0.1).astype(np.float32)
    denoiser = StreamingDenoiser()
    out = denoiser.push(bursts)
    tail = denoiser.flush()
    assert out.size + tail.size == bursts.size  # a commit loses none of the speech's end
    assert np.allclose(np.concatenate([out, tail]), bursts, atol=1e-3)  # and the output lines up with the input
    more = np.concatenate([denoiser.push(bursts[i : i + 320]) for i in range(0, bursts.size, 320)])
    assert more.size + denoiser.flush().size == bursts.size  # the flush's silence never reaches the output
    assert np.allclose(more[400:8000], bursts[400:8000], atol=1e-3)


# --- the session machine ------------------------------------------------------------------------------


class ScriptedVad:
    """Speech probability from the audio itself: loud samples are speech, quiet ones are not."""

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def push(self, audio: np.ndarray) -> list[float]:
        data = np.concatenate([self._pending, audio])
        whole = len(data) // FRAME * FRAME
        self._pending = data[whole:]
        return [0.95 if np.abs(f).mean() > 0.05 else 0.02 for f in data[:whole].reshape(-1, FRAME)]


SPEC = ModelSpec(id="whisper-base", kind="stt", loader=lambda: None)


def _env(**overrides: Any) -> SessionEnv:
    counter = itertools.count(1)

    def resolve(name: str) -> ModelSpec:
        if name.startswith("no-"):
            raise ModelNotFound(name)
        return SPEC

    return SessionEnv(
        resolve_stt=resolve,
        default_stt_model="whisper-1",
        vad_frames=ScriptedVad,  # type: ignore[arg-type]
        clock=lambda: 1_000_000.0,
        ids=lambda prefix: f"{prefix}_{next(counter)}",
        **overrides,
    )


def _append(session: TranscriptionSession, seconds: float, loud: bool) -> None:
    samples = int(seconds * 24000)
    tone = np.sin(np.arange(samples) / 24000 * 2 * np.pi * 300) * (12000 if loud else 0)
    audio = base64.b64encode(tone.astype("<i2").tobytes()).decode()
    session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))


def _stream(
    session: TranscriptionSession, schedule: list[tuple[float, bool]], decode: Callable[[DecodeJob], Transcript]
) -> list[DecodeJob]:
    """Stream `schedule` (seconds, loud) in 100 ms appends, decoding every job as it comes; the jobs in order."""
    jobs: list[DecodeJob] = []
    for seconds, loud in schedule:
        for _ in range(round(seconds * 10)):
            _append(session, 0.1, loud=loud)
            while batch := session.take_jobs():
                for job in batch:
                    jobs.append(job)
                    session.decoded(job, decode(job))
    return jobs


def _run_jobs(session: TranscriptionSession, text: str = "hello there world") -> list[DecodeJob]:
    done = []
    while jobs := session.take_jobs():
        for job in jobs:
            done.append(job)
            session.decoded(job, _transcript(text))
    return done


def test_session_server_vad_turn_events_in_order() -> None:
    session = TranscriptionSession(_env(live_deltas=False))
    session.start()
    _append(session, 1.0, loud=False)
    _append(session, 2.0, loud=True)
    jobs = []
    for _ in range(10):  # the pump runs the jobs between appends
        _append(session, 0.1, loud=False)
        jobs += _run_jobs(session)
    events = session.take_events()
    for event in events:
        validate(event)
    types = [e["type"] for e in events]
    assert types == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    started, stopped = events[1], events[2]
    assert started["audio_start_ms"] == pytest.approx(1000, abs=40)
    assert stopped["audio_end_ms"] == pytest.approx(3000, abs=40)
    # The candidate decoded at the pause became the final: no second decode of the same audio.
    assert [j.kind for j in jobs] == ["candidate"]
    assert len(jobs[0].audio) / 16000 == pytest.approx(2.0 + 0.3 + 0.2, abs=0.05)
    assert events[6]["transcript"] == "hello there world"


def _manual_turn(session: TranscriptionSession, seconds: float, text: str, language: str = "en") -> DecodeJob:
    _append(session, seconds, loud=True)
    session.receive(json.dumps({"type": "input_audio_buffer.commit"}))
    (job,) = session.take_jobs()
    session.decoded(job, _transcript(text, language))
    return job


def test_turns_are_decoded_with_the_sessions_earlier_text_as_prompt() -> None:
    session = TranscriptionSession(_env())
    session.start()
    session.receive(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    first = _manual_turn(session, 4.0, "It was a cold night,", language="de")
    assert first.options.prompt is None and first.options.language is None
    # A turn too short to detect its language reliably is decoded in the language last heard; the
    # session's text so far is its prompt, so a turn cut at a pause reads as the continuation it is.
    second = _manual_turn(session, 1.0, "and the wind blew.")
    assert second.options.prompt == "It was a cold night," and second.options.language == "de"
    third = _manual_turn(session, 4.0, "x" * 20)
    assert third.options.prompt == "It was a cold night, and the wind blew." and third.options.language is None
    # A client's own prompt comes first, then the earlier text, kept to its last few hundred characters.
    session.receive(
        json.dumps(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"transcription": {"model": "whisper-1", "prompt": "Names: Ana."}}}},
            }
        )
    )
    session.take_events()
    words = " ".join(f"word{i}" for i in range(200))  # (no run of words repeated: see the next test)
    assert _manual_turn(session, 1.0, words).options.prompt == (
        "Names: Ana. It was a cold night, and the wind blew. xxxxxxxxxxxxxxxxxxxx"
    )
    long_prompt = _manual_turn(session, 1.0, "word").options.prompt
    assert long_prompt is not None and long_prompt.startswith("Names: Ana. word") and len(long_prompt) <= 320
    session.receive(
        json.dumps(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"transcription": {"model": "whisper-1", "prompt": "p " * 500}}}},
            }
        )
    )
    session.take_events()
    assert _manual_turn(session, 1.0, "word").options.prompt == ("p " * 500).strip()  # no room left: the client's
    session.receive(
        json.dumps(
            {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "whisper-1"}}}}}
        )
    )
    prompt = _manual_turn(session, 1.0, "y").options.prompt
    assert prompt is not None and 250 <= len(prompt) <= 300 and prompt.startswith("word") and prompt.endswith("word")
    plain = TranscriptionSession(_env(turn_context=False))
    plain.start()
    plain.receive(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    _manual_turn(plain, 1.0, "one")
    assert _manual_turn(plain, 1.0, "two").options.prompt is None


def test_a_turn_after_a_short_pause_is_decoded_after_the_previous_turns_audio() -> None:
    session = TranscriptionSession(_env(live_deltas=False, turn_audio_context_seconds=4.0))
    session.start()
    jobs: list[DecodeJob] = []

    def speak(seconds: float, reply: dict[tuple[str, ...], str]) -> list[str]:
        _append(session, seconds, loud=True)
        for _ in range(10):  # 1 s of silence: the turn stops after 500 ms of it
            _append(session, 0.1, loud=False)
            while batch := session.take_jobs():
                for job in batch:
                    jobs.append(job)
                    session.decoded(job, _transcript(reply[job.context_words]))
        return [e["transcript"] for e in session.take_events() if e["type"].endswith("transcription.completed")]

    _append(session, 0.5, loud=False)
    assert speak(1.5, {(): "Hello there,"}) == ["Hello there,"]
    first = len(jobs)
    assert speak(1.0, {("hello", "there"): "Hello there, general Kenobi.", (): "General Kenobi."}) == [
        "general Kenobi."  # the previous turn ended mid-sentence
    ]
    second = jobs[first]
    assert second.context_words == ("hello", "there")
    # The previous turn's audio (1.5 s of speech, 0.3 s before, 0.2 s after) leads this one's.
    assert second.audio.size / 16000 == pytest.approx((0.3 + 1.5 + 0.2) + (0.3 + 1.0 + 0.2), abs=0.1)
    assert second.options.prompt is None  # the session's text before those turns: none
    # A decode that lost the earlier turns' words cannot place the cut: the turn is decoded alone.
    start = len(jobs)
    context = ("hello", "there", "general", "kenobi")
    assert speak(1.0, {context: "Something else entirely.", (): "Alone."}) == ["Alone."]
    assert [j.context_words for j in jobs[start:]] == [context, ()]
    # The run of turns keeps its last 4 s of audio: the first turn (2 s) leaves it.
    start = len(jobs)
    assert speak(0.5, {("general", "kenobi", "alone"): "General Kenobi. Alone, yes."}) == ["Yes."]  # after "Alone."
    assert jobs[start].options.prompt == "Hello there,"
    # After a long pause a turn is decoded alone.
    _append(session, 2.0, loud=False)
    start = len(jobs)
    assert speak(1.0, {(): "Later."}) == ["Later."]
    assert [j.context_words for j in jobs[start:]] == [()]


@pytest.mark.parametrize("live_context", [False, True])
def test_live_decodes_of_a_turn_after_a_short_pause(live_context: bool) -> None:
    session = TranscriptionSession(_env(partial_min_ms=300, live_audio_context=live_context))
    session.start()
    replies = {(): "Hello there,", ("hello", "there"): "Hello there, general Kenobi."}
    _append(session, 0.5, loud=False)
    schedule = [(1.5, True), (0.7, False), (1.5, True), (1.0, False)]
    jobs = _stream(session, schedule, lambda job: _transcript(replies[job.context_words]))
    second = [j for j in jobs if j.kind == "partial"][-1]
    assert second.context_words == (("hello", "there") if live_context else ())
    done = [e["transcript"] for e in session.take_events() if e["type"].endswith("transcription.completed")]
    assert done == ["Hello there,", "general Kenobi."] if live_context else len(done) == 2


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "whisper-1"])
def test_usage_of_a_turn_decoded_after_the_previous_turns_counts_its_own_audio_and_words(model: str) -> None:
    session = TranscriptionSession(_env(live_deltas=False))
    session.start()
    update = {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": model}}}}}
    session.receive(json.dumps(update))
    replies = {(): "one two", ("one", "two"): "one two three four five six"}

    def decode(job: DecodeJob) -> Transcript:
        text = replies[job.context_words]
        tokens = list(range(len(text.split()) * 2))  # two tokens a word
        return Transcript(
            "transcribe",
            "en",
            job.audio.size / 16000,
            [Segment(0, 0, 0.0, 1.0, " " + text, tokens, 0.0, -0.1, 1.0, 0.0)],
            5,
        )

    _append(session, 0.5, loud=False)
    jobs = _stream(session, [(1.5, True), (0.7, False), (1.0, True), (1.0, False)], decode)
    assert [j.context_words for j in jobs] == [(), ("one", "two")]
    own_seconds = jobs[1].audio.size / 16000 - jobs[0].audio.size / 16000  # the second turn's audio alone
    completed = [e for e in session.take_events() if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in completed] == ["one two", "three four five six"]
    usage = completed[1]["usage"]
    if model.startswith("gpt-"):
        audio = math.ceil(own_seconds * 10)
        assert usage["input_token_details"] == {"text_tokens": 5, "audio_tokens": audio}
        assert usage["output_tokens"] == 8  # its 4 words, not the 6 the joint decode read
        assert usage["input_tokens"] == audio + 5 and usage["total_tokens"] == audio + 13
    else:
        assert usage == {"type": "duration", "seconds": pytest.approx(own_seconds, abs=0.001)}


def test_after_context_cuts_the_earlier_turns_reading_and_keeps_timed_words() -> None:
    out = after_context(_timed(("Alone.", 0.9), ("yes", 0.8), ("sir", 0.7)), ("alone",), sentence=True)
    assert out is not None and out.text.strip() == "Yes sir"
    assert [w.word for w in out.words] == [" Yes", " sir"] and words_of(out)[1].logprob == pytest.approx(math.log(0.7))
    # Whisper read something else than the earlier turns: the cut cannot be placed.
    assert after_context(_timed(("Other", 0.9), ("words", 0.9)), ("alone", "again")) is None


def test_no_live_decode_starts_while_speech_may_be_stopping() -> None:
    session = TranscriptionSession(_env(partial_min_ms=300, partial_interval_ms=100, partial_quick_until_ms=500))
    session.start()
    _append(session, 0.5, loud=False)
    kinds = []
    for step in range(25):
        _append(session, 0.1, loud=step < 15)
        for job in session.take_jobs():
            kinds.append((step, job.kind))
            session.decoded(job, _transcript("hello there world"))
    partials = [step for step, kind in kinds if kind == "partial"]
    assert partials and max(partials) < 15  # none once the silence began
    assert any(kind == "candidate" for _, kind in kinds)


def test_session_buffer_cap_and_commit_errors() -> None:
    session = TranscriptionSession(_env(max_audio_seconds=1.0))
    session.start()
    session.receive(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    _append(session, 0.8, loud=True)
    _append(session, 0.5, loud=True)  # would pass the 1 s cap: refused whole
    session.receive(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c1"}))
    events = session.take_events()
    errors = [e for e in events if e["type"] == "error"]
    assert [e["error"]["code"] for e in errors] == ["input_audio_buffer_full"]
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 1
    job = session.take_jobs()[0]
    assert len(job.audio) / 16000 == pytest.approx(0.8, abs=0.01) and job.kind == "final"
    session.decoded(job, RuntimeError("boom"))
    failed = [e for e in session.take_events() if e["type"].endswith("transcription.failed")]
    assert failed and failed[0]["error"]["type"] == "transcription_error"
    session.receive(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c2"}))
    error = session.take_events()[0]["error"]
    assert (error["code"], error["event_id"]) == ("input_audio_buffer_commit_empty", "c2")


def test_beta_session_names_and_unknown_model() -> None:
    session = TranscriptionSession(_env(), Dialect.BETA)
    session.start()
    session.receive(
        json.dumps(
            {"type": "transcription_session.update", "session": {"input_audio_transcription": {"model": "no-x"}}}
        )
    )
    created, error = session.take_events()
    assert created["type"] == "transcription_session.created"
    validate(created, beta=True)
    assert error["error"]["code"] == "model_not_found"
    assert error["error"]["param"] == "session.input_audio_transcription.model"
    session.receive(json.dumps({"type": "transcription_session.update", "session": {"turn_detection": None}}))
    (updated,) = session.take_events()
    validate(updated, beta=True)
    assert updated["session"]["turn_detection"] is None
    assert session.config == TranscriptionSessionConfig(
        session.config.input.__class__(transcription=session.config.input.transcription, turn_detection=None)
    )


# --- decodes stop with their caller ---------------------------------------------------------------------


class _SlowRun:
    """A decode of many steps, each taking a while (as Whisper's windows do)."""

    def __init__(self) -> None:
        self.steps = 0
        self.transcript = _transcript("")

    def next_segment(self) -> Segment | None:
        self.steps += 1
        time.sleep(0.05)
        return None if self.steps > 40 else Segment(0, 0, 0.0, 1.0, " word", [1], 0.0, -0.1, 1.0, 0.0)


class _SlowEngine:
    def __init__(self) -> None:
        self.runs: list[_SlowRun] = []

    def start(self, audio: np.ndarray, options: Any) -> _SlowRun:
        self.runs.append(_SlowRun())
        return self.runs[-1]


class _OneModel:
    def __init__(self, engine: _SlowEngine) -> None:
        self.engine = engine
        self.leased = 0

    @contextlib.contextmanager
    def lease(self, spec: ModelSpec) -> Iterator[_SlowEngine]:
        self.leased += 1
        try:
            yield self.engine
        finally:
            self.leased -= 1


def test_transcribe_samples_stops_between_steps_when_cancelled() -> None:
    engine = _SlowEngine()
    registry = _OneModel(engine)
    gate = EngineGate("stt-test", 1, 4)
    stt = SpeechToText(registry, gate)  # type: ignore[arg-type]

    async def scenario() -> int:
        task = asyncio.create_task(stt.transcribe_samples(SPEC, np.zeros(16000, np.float32), TranscribeOptions()))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert gate.active == 0 and registry.leased == 0  # the slot and the model are free at once
        at_cancel = engine.runs[0].steps
        await asyncio.sleep(0.4)
        return at_cancel

    try:
        at_cancel = asyncio.run(scenario())
    finally:
        gate.shutdown()
    assert 2 <= at_cancel < 40
    assert engine.runs[0].steps <= at_cancel + 1  # at most the step in progress finished


# --- live decodes that loop, fail or read little ---------------------------------------------------


def _scored(text: str, avg_logprob: float) -> Transcript:
    segment = Segment(0, 0, 0.0, 1.0, " " + text, [1, 2, 3], 0.0, avg_logprob, 1.0, 0.0)
    return Transcript("transcribe", "en", 1.0, [segment])


def test_a_looping_live_reading_counts_only_up_to_its_loop() -> None:
    assert [w.key for w in before_repeat(words_of(_transcript("The cons. The cons. The cons.")))] == ["the", "cons"]
    assert [w.key for w in before_repeat(words_of(_transcript("that that is it")))] == ["that", "that", "is", "it"]
    live = LiveTranscript(hold_back=2, agreement=3)
    loop = "This I read. This I read. This I read. This I"
    assert live.update(_transcript(loop)) == [] and live.update(_transcript(loop)) == []
    # Three readings agree on the whole loop; read up to it, only "This" is clear of the audio's edge.
    assert delta_text(live.update(_transcript(loop))) == "This"
    assert delta_text(live.finish(_transcript("This I read with great attention."))) == " I read with great attention."


def test_an_improbable_live_reading_is_not_counted() -> None:
    live = LiveTranscript(hold_back=1, agreement=2)
    assert live.update(_scored("I really liked that", -0.3)) == []
    assert live.update(_scored("I really liked that", -1.4)) == []  # Whisper's fallback threshold is -1
    assert delta_text(live.update(_scored("I really liked that", -0.2))) == "I really liked"


def test_a_short_live_reading_holds_back_only_its_last_word() -> None:
    plain, short = LiveTranscript(hold_back=2, agreement=3), LiveTranscript(hold_back=2, agreement=3, short_reading=3)
    for text in ("Not 1.1.", "Not 1.15.", "Not 1.15."):
        sent_plain, sent_short = plain.update(_transcript(text)), short.update(_transcript(text))
    assert sent_plain == [] and delta_text(sent_short) == "Not"
    assert delta_text(short.update(_transcript("Not 1.15 miles."))) == " 1.15"  # three read it; "miles" is last
    assert delta_text(short.update(_transcript("Not 1.15 miles per hour."))) == ""  # "miles": two readings so far
    assert delta_text(short.update(_transcript("Not 1.15 miles per hour."))) == " miles"  # 5 words: 2 held back


def test_the_decode_fallback_runs_no_rung_after_the_first_when_told_not_to_retry() -> None:
    from voxserve.engines.decode_fallback import PromptShape, Thresholds, decode

    calls: list[dict[str, Any]] = []

    class Output:
        def __init__(self) -> None:
            self.sequences_ids = [[7] * 40]
            self.scores = [-80.0]  # an average log probability of -2: a failed decode
            self.no_speech_prob = 0.0

    def generate(indices: list[int], prompts: list[list[int]], options: dict[str, Any]) -> list[Any]:
        calls.append(options)
        return [Output() for _ in indices]

    common = {
        "temperature": 0.0,
        "beam_size": 1,
        "best_of": 5,
        "thresholds": Thresholds(),
        "shape": PromptShape(1, 2, 3),
    }
    results, fallbacks = decode(generate, [[2]], lambda tokens: "x " * len(tokens), retry=False, **common)
    assert len(calls) == 1 and fallbacks == 0 and results[0].tokens == [7] * 40
    calls.clear()
    decode(generate, [[2]], lambda tokens: "x " * len(tokens), **common)
    assert len(calls) == 3  # the first decode, then both deterministic rungs


def test_live_decodes_neither_retry_nor_run_long_and_start_at_400_ms_of_speech() -> None:
    session = TranscriptionSession(_env())
    session.start()
    jobs = _stream(session, [(0.5, False), (2.0, True), (1.0, False)], lambda job: _transcript("one two three"))
    partials = [j for j in jobs if j.kind == "partial"]
    assert partials and all(not j.options.retry_failed and j.options.max_tokens_per_second for j in partials)
    finals = [j for j in jobs if j.kind != "partial"]
    assert finals and all(j.options.retry_failed and j.options.max_tokens_per_second is None for j in finals)
    # Speech starts at 0.5 s; its audio begins 300 ms earlier (prefix padding): 0.4 + 0.3 s by the first.
    assert partials[0].audio.size / 16000 == pytest.approx(0.7, abs=0.1)


def test_a_final_decode_that_reads_the_turn_twice_over_is_decoded_again_without_the_context() -> None:
    session = TranscriptionSession(_env())
    session.start()
    session.receive(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    _manual_turn(session, 2.0, "The most unusual thing.")
    session.take_events()
    _append(session, 2.0, loud=True)
    session.receive(json.dumps({"type": "input_audio_buffer.commit"}))
    (looped,) = session.take_jobs()
    assert looped.options.prompt == "The most unusual thing."
    session.decoded(looped, _transcript("This I read with great attention. This I read with great attention."))
    (again,) = session.take_jobs()
    assert again.kind == "final" and again.options.prompt is None
    session.decoded(again, _transcript("This I read with great attention."))
    done = [e for e in session.take_events() if e["type"].endswith("transcription.completed")]
    assert [e["transcript"] for e in done] == ["This I read with great attention."]
    # Without the session's text as the prompt, a decode that repeats itself is what the turn said.
    plain = TranscriptionSession(_env(turn_context=False))
    plain.start()
    plain.receive(json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}))
    _manual_turn(plain, 1.0, "one")
    _manual_turn(plain, 1.0, "No no no. No no no.")
    assert plain.take_jobs() == []
