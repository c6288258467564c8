"""Realtime conversations (speech in, speech out) with the official SDK's realtime client, every server
event validated strictly against the SDK's own types (GA, or beta for beta clients)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.audio_tools import wer
from tests.conftest import Server
from tests.realtime_conversation_tools import (
    AUDIO_REPLY,
    TEXT_REPLY,
    answer_pcm,
    collapsed,
    espeak_pcm,
    pcm_wav,
    response_events,
)
from tests.realtime_tools import EventReader, silence, stream

QUESTION = "Why do people like dogs?"


def _user_text(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    if item_id:
        item["id"] = item_id
    return item


def _errors(reader: EventReader) -> list[dict[str, Any]]:
    return [e["error"] for e in reader.of("error")]


def test_a_spoken_question_gets_a_spoken_answer(server: Server, client: OpenAI) -> None:
    """Server VAD ends the turn, a response starts by itself, its audio says what its transcript says."""
    with client.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        reader.wait_type("session.created")
        conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {"transcription": {"model": "whisper-1"}},
                    "output": {"voice": "alloy"},
                },
            }
        )
        reader.wait_type("session.updated")
        stream(conn, np.concatenate([silence(0.4), espeak_pcm(QUESTION), silence(1.2)]), speed=4)
        done = reader.wait_type("response.done", timeout=120)[0]["response"]
        heard = reader.wait_type("conversation.item.input_audio_transcription.completed")[0]["transcript"]
    assert not reader.errors, reader.errors
    assert not _errors(reader)
    types = [e["type"] for _, e in reader.events]
    order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
             "input_audio_buffer.committed", "conversation.item.added", "response.created"]  # fmt: skip
    assert [t for t in types if t in order][: len(order)] == order
    assert wer(QUESTION, heard) <= 0.25, heard
    assert done["status"] == "completed" and done["output"][0]["role"] == "assistant"
    events = response_events(reader, done["id"])
    assert collapsed(events) == AUDIO_REPLY
    transcript = done["output"][0]["content"][0]["transcript"]
    part_done = next(e for e in events if e["type"] == "response.content_part.done")
    assert transcript.strip() and transcript == part_done["part"]["transcript"]
    assert done["usage"]["output_token_details"]["audio_tokens"] > 0
    # The answer's audio, transcribed by the server's own speech-to-text, says its transcript.
    pcm = answer_pcm(events)
    assert len(pcm) > 24000  # more than half a second
    said = client.audio.transcriptions.create(model="whisper-1", file=("answer.wav", pcm_wav(pcm)), language="en")
    assert wer(transcript, said.text) <= 0.25, (transcript, said.text)


def test_text_only_metadata_and_out_of_band(client: OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime-mini") as conn:
        reader = EventReader(conn)
        reader.wait_type("session.created")
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "instructions": "Be brief."})
        conn.conversation.item.create(item=_user_text("Name a color of the sky.", "item_user_1"))
        conn.response.create(response={"metadata": {"topic": "sky"}, "max_output_tokens": 20})
        first = reader.wait_type("response.done", timeout=120)[0]["response"]
        # Out of band: its own input, not added to the conversation.
        conn.response.create(
            response={
                "conversation": "none",
                "metadata": {"purpose": "classify"},
                "output_modalities": ["text"],
                "instructions": "Answer yes or no.",
                "input": [_user_text("Is the sky blue?")],
            }
        )
        second = reader.wait_type("response.done", 2, timeout=120)[1]["response"]
        conn.conversation.item.retrieve(item_id=second["output"][0]["id"])
        reader.wait_type("error")
        conn.conversation.item.retrieve(item_id=first["output"][0]["id"])
        retrieved = reader.wait_type("conversation.item.retrieved")[0]["item"]
    assert not reader.errors, reader.errors
    created = reader.of("response.created")
    assert created[0]["response"]["metadata"] == {"topic": "sky"} == first["metadata"]
    assert created[1]["response"]["metadata"] == {"purpose": "classify"} == second["metadata"]
    assert first["status"] in ("completed", "incomplete") and first["conversation_id"]
    assert collapsed(response_events(reader, first["id"])) == TEXT_REPLY
    text = first["output"][0]["content"][0]["text"]
    assert text.strip() and retrieved["content"][0]["text"] == text
    assert second["conversation_id"] is None and second["output"][0]["content"][0]["text"].strip()
    oob = collapsed(response_events(reader, second["id"]))
    assert "conversation.item.added" not in oob and oob[0] == "response.created" and oob[-1] == "response.done"
    assert _errors(reader)[0]["code"] == "item_not_found"
    added = reader.of("conversation.item.added")
    assert added[0]["item"]["id"] == "item_user_1"


def test_items_cancel_and_the_session_goes_on(client: OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        reader.wait_type("session.created")
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        conn.conversation.item.create(item=_user_text("first", "item_a"))
        conn.conversation.item.create(item=_user_text("before first", "item_b"), previous_item_id="root")
        conn.conversation.item.create(
            item={"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
            previous_item_id="item_a",
        )
        conn.conversation.item.create(item=_user_text("again", "item_a"))  # a duplicate id
        conn.conversation.item.delete(item_id="item_b")
        conn.conversation.item.delete(item_id="item_b")  # gone already
        conn.conversation.item.truncate(item_id="item_a", content_index=0, audio_end_ms=10)  # not audio
        conn.response.cancel()  # nothing to cancel
        reader.wait_type("conversation.item.deleted")
        reader.wait_type("error", 4)
        conn.conversation.item.create(item=_user_text("Write a long story about a cat named Tom."))
        conn.response.create()
        reader.wait_type("response.created")
        conn.response.create()  # one at a time
        reader.wait_type("error", 5)
        conn.response.cancel()
        cancelled = reader.wait_type("response.done", timeout=60)[0]["response"]
        conn.response.create(response={"max_output_tokens": 8})
        after = reader.wait_type("response.done", 2, timeout=120)[1]["response"]
    assert not reader.errors, reader.errors
    codes = [e["code"] for e in _errors(reader)]
    assert codes == ["item_already_exists", "item_not_found", "invalid_value", "response_cancel_not_active",
                     "conversation_already_has_active_response"]  # fmt: skip
    added = reader.of("conversation.item.added")
    assert added[1]["previous_item_id"] is None and added[2]["previous_item_id"] == "item_a"
    assert cancelled["status"] == "cancelled"
    assert cancelled["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert after["status"] in ("completed", "incomplete")


def test_barge_in_and_truncate(client: OpenAI) -> None:
    """Speech during an answer cancels it (turn_detected) and truncates it to what was played; a
    client's truncate cuts a finished answer's transcript to the audio heard."""
    with client.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        reader.wait_type("session.created")
        conn.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a storyteller. Tell long, detailed stories in plain sentences.",
                "audio": {
                    "input": {
                        "turn_detection": {"type": "server_vad", "create_response": False, "interrupt_response": True}
                    }
                },
            }
        )
        conn.conversation.item.create(item=_user_text("Tell me a long story about a dragon and a knight."))
        conn.response.create()
        reader.wait_type("response.output_audio.delta", timeout=120)
        time.sleep(0.5)
        stream(conn, np.concatenate([espeak_pcm("Stop, please stop."), silence(1.0)]), speed=2)
        done = reader.wait_type("response.done", timeout=60)[0]["response"]
        truncated = reader.wait_type("conversation.item.truncated")[0]
        item_id = done["output"][0]["id"]
        conn.conversation.item.retrieve(item_id=item_id)
        retrieved = reader.wait_type("conversation.item.retrieved")[0]["item"]
        # A finished answer, truncated by the client at 1 s.
        conn.conversation.item.create(item=_user_text("Why do people like cats?"))
        conn.response.create(response={"instructions": "Answer in two sentences."})
        full = reader.wait_type("response.done", 2, timeout=120)[1]["response"]
        conn.conversation.item.truncate(item_id=full["output"][0]["id"], content_index=0, audio_end_ms=600000)
        reader.wait_type("error")
        conn.conversation.item.truncate(item_id=full["output"][0]["id"], content_index=0, audio_end_ms=1000)
        reader.wait_type("conversation.item.truncated", 2)
        conn.conversation.item.retrieve(item_id=full["output"][0]["id"])
        cut = reader.wait_type("conversation.item.retrieved", 2)[1]["item"]
    assert not reader.errors, reader.errors
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "turn_detected"
    types = [e["type"] for _, e in reader.events]
    assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
    assert truncated["item_id"] == item_id
    sent_ms = len(answer_pcm(response_events(reader, done["id"]))) / 48
    assert truncated["audio_end_ms"] <= sent_ms + 1
    spoken = retrieved["content"][0]["transcript"]
    full_text = "".join(e["delta"] for e in response_events(reader, done["id"])
                        if e["type"] == "response.output_audio_transcript.delta")  # fmt: skip
    assert len(spoken) < len(full_text)
    whole = full["output"][0]["content"][0]["transcript"]
    assert len(cut["content"][0]["transcript"]) < len(whole)


def test_a_client_leaving_mid_response_frees_the_engines(server: Server, client: OpenAI) -> None:
    with client.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        conn.conversation.item.create(item=_user_text("Tell me a long story about the sea."))
        conn.response.create()
        reader.wait_type("response.output_audio_transcript.delta", timeout=120)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = httpx.get(f"{server.base_url}/health", timeout=5).json()
        if health["realtime_sessions"] == 0 and health["chat"]["active"] == 0 and health["tts"]["active"] == 0:
            break
        time.sleep(0.1)
    assert health["realtime_sessions"] == 0 and health["chat"]["active"] == 0 and health["tts"]["active"] == 0


def test_tools_with_the_embedded_model_name_the_upstream_option(client: OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    with client.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        conn.session.update(session={"type": "realtime", "tools": [tool], "output_modalities": ["text"]})
        conn.conversation.item.create(item=_user_text("What is the weather?"))
        conn.response.create()
        failed = reader.wait_type("response.done", timeout=60)[0]["response"]
        conn.session.update(session={"type": "realtime", "tools": []})
        conn.response.create(response={"max_output_tokens": 8})
        after = reader.wait_type("response.done", 2, timeout=120)[1]["response"]
    assert not reader.errors, reader.errors
    assert "VOXSERVE_CHAT_UPSTREAM_URL" in _errors(reader)[0]["message"]
    assert failed["status"] == "failed"
    assert after["status"] in ("completed", "incomplete")


def test_beta_client_gets_beta_event_names(server: Server) -> None:
    client = server.client(websocket_base_url=f"ws://127.0.0.1:{server.port}/v1")
    with client.beta.realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn, beta=True)
        reader.wait_type("session.created")
        conn.session.update(
            session={
                "modalities": ["text", "audio"],
                "voice": "echo",
                "output_audio_format": "g711_ulaw",
                "instructions": "Answer in one short sentence.",
            }
        )
        reader.wait_type("session.updated")
        conn.conversation.item.create(item=_user_text("Say hello."))
        conn.response.create()
        done = reader.wait_type("response.done", timeout=120)[0]["response"]
    assert not reader.errors, reader.errors
    types = {e["type"] for _, e in reader.events}
    assert {"conversation.item.created", "response.audio_transcript.delta", "response.audio.delta",
            "response.audio.done", "response.audio_transcript.done"} <= types  # fmt: skip
    assert not types & {"conversation.item.added", "response.output_audio.delta"}
    assert done["status"] == "completed" and done["output"][0]["content"][0]["type"] == "audio"
    ulaw = answer_pcm(response_events(reader, done["id"]), "response.audio.delta")
    assert len(ulaw) > 4000  # 8 kHz, one byte a sample: over half a second


def test_unknown_models_are_refused_cleanly(client: OpenAI) -> None:
    with client.realtime.connect(model="tts-1") as conn:
        event = json.loads(conn.recv_bytes())
    assert event["type"] == "error" and event["error"]["param"] == "model"


def test_an_ephemeral_key_carries_the_conversation_config(server: Server, client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.realtime.client_secrets.create(session={"type": "realtime", "max_output_tokens": 99999})
    assert refused.value.body["param"] == "session.max_output_tokens"  # type: ignore[index]
    secret = client.realtime.client_secrets.create(
        session={"type": "realtime", "instructions": "Talk like a pirate.", "output_modalities": ["text"]}
    )
    with server.client(api_key=secret.value).realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        created = reader.wait_type("session.created")[0]["session"]
    assert not reader.errors, reader.errors
    assert created["instructions"] == "Talk like a pirate." and created["output_modalities"] == ["text"]


@pytest.mark.parametrize(
    ("route", "field"),
    [("/v1/realtime/sessions", "expires_after"), ("/v1/realtime/transcription_sessions", "expires_at")],
)
def test_beta_session_routes_read_their_own_key_lifetime(server: Server, route: str, field: str) -> None:
    """The beta SDK names the key's lifetime `client_secret.expires_after` for sessions and
    `client_secret.expires_at` for transcription sessions; each route reads its own."""
    before = time.time()
    answer = httpx.post(
        f"{server.base_url}{route}", json={"client_secret": {field: {"anchor": "created_at", "seconds": 120}}}
    )
    assert answer.status_code == 200, answer.text
    secret = answer.json()["client_secret"]
    assert secret["value"].startswith("ek_") and before + 110 <= secret["expires_at"] <= time.time() + 130
    bad = httpx.post(f"{server.base_url}{route}", json={"client_secret": {field: {"seconds": "soon"}}})
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith(f"client_secret.{field}"), bad.text
    wrong = httpx.post(f"{server.base_url}{route}", json={"client_secret": "forever"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "client_secret", wrong.text
