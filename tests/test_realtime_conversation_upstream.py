"""A conversation's tool call round trip, through an upstream chat backend that records what it is sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import Server
from tests.realtime_conversation_tools import collapsed, response_events
from tests.realtime_tools import EventReader

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class _ToolUpstream:
    """Streams a `get_weather` call while the conversation has no tool result, then an answer using it."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.requests.append(body)
                base = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
                answered = any(m.get("role") == "tool" for m in body["messages"])
                if body.get("tools") and not answered:
                    deltas: list[dict[str, Any]] = [
                        {"role": "assistant", "content": None, "tool_calls": [{
                            "index": 0, "id": "call_up_1", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]},
                        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
                    ]  # fmt: skip
                    finish = "tool_calls"
                else:
                    tool = next((m["content"] for m in body["messages"] if m.get("role") == "tool"), "")
                    deltas = [{"role": "assistant", "content": "It is "}, {"content": f"{json.loads(tool)['sky']}."}]
                    finish = "stop"
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for delta in deltas:
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
                usage = {**base, "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 5,
                                                          "total_tokens": 35}}  # fmt: skip
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def upstream() -> Iterator[_ToolUpstream]:
    recorder = _ToolUpstream()
    yield recorder
    recorder.httpd.shutdown()


def test_a_tool_call_round_trip(start_server: Callable[..., Server], upstream: _ToolUpstream) -> None:
    front = start_server({"VOXSERVE_CHAT_UPSTREAM_URL": upstream.url, "VOXSERVE_CHAT_UPSTREAM_MODEL": "up-model"})
    with front.client().realtime.connect(model="gpt-realtime") as conn:
        reader = EventReader(conn)
        conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER_TOOL], "tool_choice": "auto"}
        )
        conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]}
        )
        conn.response.create()
        called = reader.wait_type("response.done", timeout=60)[0]["response"]
        call = called["output"][0]
        conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": json.dumps({"sky": "sunny"})}
        )
        conn.response.create()
        answered = reader.wait_type("response.done", 2, timeout=60)[1]["response"]
    assert not reader.errors, reader.errors
    assert not reader.of("error")
    assert call["type"] == "function_call" and call["name"] == "get_weather" and call["call_id"] == "call_up_1"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    types = collapsed(response_events(reader, called["id"]))
    assert types == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    deltas = [e["delta"] for e in response_events(reader, called["id"]) if e["type"].endswith("arguments.delta")]
    assert "".join(deltas) == call["arguments"]
    assert answered["output"][0]["content"][0]["text"] == "It is sunny."
    assert answered["usage"]["input_tokens"] == 30
    # What the upstream was sent: the tools in chat form, then the call and its result in the history.
    first, second = upstream.requests[-2]["messages"], upstream.requests[-1]
    assert upstream.requests[-2]["tools"][0]["function"]["name"] == "get_weather"
    assert upstream.requests[-2]["tool_choice"] == "auto" and upstream.requests[-2]["model"] == "up-model"
    assert first[0]["role"] == "system" and first[-1] == {"role": "user", "content": "Weather in Paris?"}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_up_1"
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_up_1", "content": '{"sky": "sunny"}'}
