"""Unit tests of the conversation session machine (sans-IO, fake engines) and its pure parts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.realtime_conversation_tools import AUDIO_REPLY
from tests.realtime_tools import validate
from tests.test_realtime_units import _append, _env, _run_jobs
from voxserve.audio.input_stream import InputAudioStream
from voxserve.engines.spoken_reply import AudioPiece, ReplyDone, TextDelta
from voxserve.errors import InvalidRequest
from voxserve.realtime.chat_history import bound_history, items_to_messages
from voxserve.realtime.conversation import ConversationEnv, ConversationSession, ResponseJob
from voxserve.realtime.conversation_config import ConversationConfig, parse_conversation_update
from voxserve.realtime.conversation_items import heard_text
from voxserve.realtime.errors import ClientEventError
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.transcription import TranscriptionSession


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _voice(name: str) -> str:
    if name == "nobody":
        raise InvalidRequest("Unknown voice `nobody`.", param="voice")
    return f"voice:{name}"


def _session(dialect: Dialect = Dialect.GA, clock: Clock | None = None, **conversation: Any) -> ConversationSession:
    env = dataclasses.replace(_env(live_deltas=False), clock=clock or Clock())
    defaults: dict[str, Any] = {"resolve_voice": _voice, "default_instructions": "Speak briefly.",
                                "chat_model": "qwen"}  # fmt: skip
    session = ConversationSession(env, ConversationEnv(**{**defaults, **conversation}), dialect)
    session.start()
    return session


def _send(session: ConversationSession, event: dict[str, Any]) -> None:
    session.receive(json.dumps(event))


def _events(session: ConversationSession, beta: bool = False) -> list[dict[str, Any]]:
    events = session.take_events()
    for event in events:
        validate(event, beta)
    return events


def _user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def _pcm(ms: float) -> bytes:
    return b"\x01\x00" * int(ms * 24)


def test_a_vad_turn_starts_a_response_once_its_words_are_known() -> None:
    session = _session()
    _append(session, 0.5, loud=False)
    _append(session, 1.5, loud=True)
    _append(session, 1.0, loud=False)
    assert not session.take_responses()  # the transcript is not in yet
    _run_jobs(session, "what time is it")
    jobs = session.take_responses()
    assert len(jobs) == 1
    body = jobs[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Speak briefly."},
        {"role": "user", "content": "what time is it"},
    ]
    assert jobs[0].voice == "voice:alloy" and body["model"] == "qwen"
    rid = jobs[0].response_id
    session.reply_event(rid, TextDelta("It is noon."))
    session.reply_event(rid, AudioPiece(_pcm(800), "It is noon.", 0.0, 800.0))
    session.reply_event(rid, ReplyDone("stop", "It is noon.", 800.0, {"prompt_tokens": 20, "completion_tokens": 4}))
    types = [e["type"] for e in _events(session)]
    # Transcription was not asked for: no transcription events, the turn's item is still completed.
    assert not [t for t in types if "input_audio_transcription" in t]
    # The user's item (with its transcript) is done right after the response starts.
    assert types[types.index("response.created") :] == [AUDIO_REPLY[0], "conversation.item.done", *AUDIO_REPLY[1:]]
    assert session.items[-1]["content"] == [{"type": "output_audio", "transcript": "It is noon."}]


def _story_being_spoken(session: ConversationSession) -> ResponseJob:
    """A response whose 2 s of audio (two sentences) were sent and which is still generating."""
    _send(session, {"type": "conversation.item.create", "item": _user("Tell a story.")})
    _send(session, {"type": "response.create"})
    (job,) = session.take_responses()
    session.reply_event(job.response_id, TextDelta("One two three four. Five six seven eight."))
    session.reply_event(job.response_id, AudioPiece(_pcm(1000), "One two three four.", 0.0, 1000.0))
    session.reply_event(job.response_id, AudioPiece(_pcm(1000), "Five six seven eight.", 1000.0, 1000.0))
    return job


def test_barge_in_cancels_and_truncates_to_what_was_played() -> None:
    clock = Clock()
    session = _session(clock=clock)
    job = _story_being_spoken(session)
    _events(session)
    clock.now += 1.5  # the client has played 1.5 s of the 2 s sent
    _append(session, 0.2, loud=False)
    _append(session, 0.6, loud=True)
    events = _events(session)
    types = [e["type"] for e in events]
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    truncated = next(e for e in events if e["type"] == "conversation.item.truncated")
    assert 1400 <= truncated["audio_end_ms"] <= 1600
    assert session.take_cancels() == [job.response_id]
    assert done["output"][0]["content"][0]["transcript"] == "One two three four. Five six"
    session.reply_event(job.response_id, TextDelta("late"))  # the cancelled reply's stragglers: dropped
    assert not [e for e in _events(session) if e["type"].startswith("response.")]


def test_client_truncates_the_answer_still_being_spoken() -> None:
    """Client-side interruption: the client stops playback mid-answer and truncates the item being generated."""
    session = _session()
    job = _story_being_spoken(session)
    item_id = next(e for e in _events(session) if e["type"] == "response.output_item.added")["item"]["id"]
    _send(session, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 1,
                    "audio_end_ms": 500})  # fmt: skip
    assert [e["error"]["param"] for e in _events(session) if e["type"] == "error"] == ["content_index"]
    _send(session, {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0,
                    "audio_end_ms": 1000})  # fmt: skip
    events = _events(session)
    assert not [e for e in events if e["type"] == "error"]
    done = next(e for e in events if e["type"] == "response.done")["response"]
    assert done["status"] == "cancelled"
    assert done["output"][0]["content"][0]["transcript"] == "One two three four."
    truncated = next(e for e in events if e["type"] == "conversation.item.truncated")
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 1000)
    assert session.take_cancels() == [job.response_id]


def test_history_is_bounded_and_out_of_band_leaves_it_alone() -> None:
    session = _session(context_tokens=400, max_tokens=100)
    for index in range(30):
        _send(session, {"type": "conversation.item.create", "item": _user(f"message number {index} " * 5)})
    _send(session, {"type": "response.create", "response": {"conversation": "none", "input": [_user("hi")],
                                                            "output_modalities": ["text"]}})  # fmt: skip
    (oob,) = session.take_responses()
    assert oob.voice is None and oob.body["messages"][-1] == {"role": "user", "content": "hi"}
    _send(session, {"type": "response.create", "response": {"instructions": "Be kind."}})
    (job,) = session.take_responses()
    messages = job.body["messages"]
    assert messages[0] == {"role": "system", "content": "Be kind."}
    assert 1 < len(messages) < 31 and messages[-1]["content"].startswith("message number 29")
    session.reply_event(oob.response_id, TextDelta("yes"))
    session.reply_event(oob.response_id, ReplyDone("stop", "yes", 0.0, None))
    done = next(e for e in _events(session) if e["type"] == "response.done")["response"]
    assert done["conversation_id"] is None and len(session.items) == 30


def test_beta_names_and_update_errors() -> None:
    session = _session(Dialect.BETA)
    _send(session, {"type": "session.update", "session": {"voice": "nobody"}})
    _send(session, {"type": "session.update", "session": {"type": "transcription"}})
    _send(session, {"type": "session.update", "session": {"modalities": ["text"], "max_response_output_tokens": 9}})
    events = _events(session, beta=True)
    assert [e["type"] for e in events] == ["session.created", "error", "error", "session.updated"]
    assert events[1]["error"]["param"] == "session.voice"
    assert events[3]["session"]["modalities"] == ["text"]
    _send(session, {"type": "conversation.item.create", "item": _user("hello")})
    _send(session, {"type": "response.create"})
    (job,) = session.take_responses()
    assert job.body["max_tokens"] == 9 and job.voice is None
    session.reply_event(job.response_id, TextDelta("Hi"))
    session.reply_event(job.response_id, ReplyDone("length", "Hi", 0.0, None))
    events = _events(session, beta=True)
    assert "response.text.delta" in [e["type"] for e in events]
    done = events[-1]["response"]
    assert done["status"] == "incomplete" and done["status_details"]["reason"] == "max_output_tokens"


def test_config_parsing() -> None:
    base = ConversationConfig()
    ga = parse_conversation_update(
        base,
        {"type": "realtime", "output_modalities": ["text"], "audio": {"output": {"voice": "echo", "speed": 1.2,
         "format": {"type": "audio/pcmu"}}}, "max_output_tokens": 50, "tracing": "auto", "instructions": "x"},
        "whisper-1",
    )  # fmt: skip
    assert (ga.output_modalities, ga.voice, ga.speed, ga.output_format, ga.max_output_tokens, ga.instructions) == (
        ("text",), "echo", 1.2, "g711_ulaw", 50, "x")  # fmt: skip
    assert parse_conversation_update(ga, {"instructions": ""}, "whisper-1").instructions is None
    for bad, param in (
        ({"colour": 1}, "session.colour"),
        ({"max_output_tokens": 5000}, "session.max_output_tokens"),
        ({"audio": {"output": {"speed": 3}}}, "session.audio.output.speed"),
    ):
        with pytest.raises(ClientEventError) as caught:
            parse_conversation_update(base, bad, "whisper-1")
        assert caught.value.param == param


def test_history_and_heard_text() -> None:
    items = [
        {"id": "a", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": "hi"}]},
        {"id": "b", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"id": "c", "type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"id": "d", "type": "function_call_output", "call_id": "c1", "output": "1"},
        {"id": "e", "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": ""}]},
    ]
    messages = items_to_messages(items)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["c1", "c2"]
    assert bound_history(messages[1:], 1) == [messages[2]]  # the newest message is always kept
    assert bound_history([messages[2], *messages[:1]], 1) == messages[:1]
    pieces = [(0.0, 1000.0, "one two"), (1000.0, 2000.0, "three four")]
    assert heard_text(pieces, 1500) == "one two three"
    assert heard_text(pieces, 0) == ""


def test_a_turn_that_was_only_noise_gets_no_answer() -> None:
    session = _session()
    _append(session, 0.5, loud=False)
    _append(session, 1.0, loud=True)
    _append(session, 1.0, loud=False)
    _run_jobs(session, "")
    assert not session.take_responses()
    done = next(e for e in _events(session) if e["type"] == "response.done")["response"]
    assert done["status"] == "cancelled" and done["output"] == []


def test_noise_reduction_is_refused_where_the_denoiser_cannot_start() -> None:
    """Both session kinds answer a `noise_reduction` the server cannot run with an error, and keep going."""

    def no_denoiser(fmt: str, denoise: bool) -> InputAudioStream:
        if denoise:
            raise RuntimeError("RNNoise is not installed")
        return InputAudioStream(fmt, denoise)

    env = dataclasses.replace(_env(live_deltas=False), input_stream=no_denoiser)
    transcription = TranscriptionSession(env, Dialect.GA)
    conversation = ConversationSession(
        env, ConversationEnv(resolve_voice=_voice, default_instructions="Speak briefly.", chat_model="qwen"), Dialect.GA
    )
    for session, body in (
        (transcription, {"type": "transcription", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}}),
        (conversation, {"type": "realtime", "audio": {"input": {"noise_reduction": {"type": "near_field"}}}}),
    ):
        session.start()
        _events(session)
        _send(session, {"type": "session.update", "session": body, "event_id": "evt_1"})
        (error,) = _events(session)
        assert error["type"] == "error", error
        assert error["error"]["param"] == "session.noise_reduction" and error["error"]["event_id"] == "evt_1"
        assert "not available" in error["error"]["message"]
        _send(session, {"type": "session.update", "session": {"type": body["type"]}})
        assert [e["type"] for e in _events(session)] == ["session.updated"]
