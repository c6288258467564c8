"""GET /metrics: the Prometheus text moves with the requests a real server answers, and JSON log lines."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import httpx
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from tests.audio_tools import SENTENCES
from tests.conftest import KEY, Server
from tests.realtime_tools import clip_pcm
from voxserve.config import Settings
from voxserve.runtime import Runtime
from voxserve.server.metrics import Metrics, MetricsMiddleware, metrics_need_key

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def test_metrics_move_with_requests(server: Server, client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, _ = short_english
    heard_seconds = _seconds(path.read_bytes())
    before = scrape(server.base_url)

    client.audio.transcriptions.create(model="whisper-1", file=path)
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=path, stream=True))
    assert events[-1].type == "transcript.text.done"
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[1], response_format="wav")
    with pytest.raises(openai.NotFoundError):
        client.audio.transcriptions.create(model="made-up-model-name", file=path)
    after = scrape(server.base_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    stt = {"endpoint": "/v1/audio/transcriptions", "method": "POST"}
    tts = {"endpoint": "/v1/audio/speech", "method": "POST", "model": "piper"}
    # Requests by endpoint, the local model behind the name the client used, and status.
    assert delta("voxserve_requests_total", **stt, model="whisper-base", status="200") == 2
    assert delta("voxserve_requests_total", **tts, status="200") == 1
    # A made-up model name never becomes a label value of its own.
    assert delta("voxserve_requests_total", **stt, model="other", status="404") == 1
    assert delta("voxserve_request_duration_seconds_count", **stt, model="whisper-base") == 2
    assert delta("voxserve_request_duration_seconds_sum", **tts) > 0
    assert delta("voxserve_time_to_first_byte_seconds_count", **tts) == 1

    # Audio seconds in and out, and the real-time factor of each job (streamed ones too).
    assert delta("voxserve_audio_input_seconds_total", model="whisper-base") == pytest.approx(2 * heard_seconds, 0.02)
    spoken = delta("voxserve_audio_output_seconds_total", model="voice:en_US-joe-medium")
    assert spoken == pytest.approx(_seconds(speech.content), abs=0.05)
    assert delta("voxserve_real_time_factor_count", engine="speech-to-text", model="whisper-base") == 2
    rtf = delta("voxserve_real_time_factor_sum", engine="speech-to-text", model="whisper-base") / 2
    assert 0 < rtf < 5
    assert delta("voxserve_engine_compute_seconds_total", engine="text-to-speech", model="voice:en_US-joe-medium") > 0

    # Engines, read when scraped; models in memory; the build.
    for engine, concurrency in [("speech-to-text", 2), ("text-to-speech", 2), ("chat", 1)]:
        assert value(after, "voxserve_engine_concurrency", engine=engine) == concurrency
        assert value(after, "voxserve_engine_queue_limit", engine=engine) == 8
        assert ("voxserve_engine_queue_depth", frozenset({("engine", engine)})) in after
        assert ("voxserve_engine_rejected_total", frozenset({("engine", engine)})) in after
    assert value(after, "voxserve_engine_active", engine="speech-to-text") == 0
    assert value(after, "voxserve_model_loaded", model="whisper-base", kind="stt") == 1
    assert value(after, "voxserve_model_loads_total", model="whisper-base", kind="stt") >= 1
    assert value(after, "voxserve_realtime_sessions_active", kind="transcription") == 0
    assert any(name == "voxserve_build_info" for name, _ in after)
    assert any(name == "process_resident_memory_bytes" for name, _ in after)


def test_keys_overload_unload_and_json_logs(
    keyed_server: Server, long_english: tuple[Path, str], short_english: tuple[Path, str]
) -> None:
    base = keyed_server.base_url
    auth = {"Authorization": f"Bearer {KEY}"}
    before = scrape(base, auth)  # the server is shared: compare with what other tests left

    def grew(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    # VOXSERVE_METRICS_REQUIRE_KEY=true: /metrics asks for the key; the playground never does.
    assert httpx.get(f"{base}/metrics").status_code == 401
    assert httpx.get(f"{base}/").status_code == 200
    assert httpx.get(f"{base}/v1/models").status_code == 401
    refused = {"endpoint": "/v1/models", "method": "GET", "model": "", "status": "401"}
    assert grew(scrape(base, auth), "voxserve_requests_total", **refused) == 1

    # One transcription holds the only slot (no queue): a second is refused with 429.
    client = keyed_server.client(api_key=KEY)
    done: dict[str, str] = {}
    holder = threading.Thread(
        target=lambda: done.update(
            text=client.audio.transcriptions.create(model="whisper-tiny.en", file=long_english[0]).text
        )
    )
    holder.start()
    stt = {"engine": "speech-to-text"}
    wait_for(lambda: value(scrape(base, auth), "voxserve_engine_active", **stt) == 1, 60, "active work")
    with pytest.raises(openai.RateLimitError):
        client.audio.transcriptions.create(model="whisper-tiny.en", file=short_english[0])
    holder.join(180)
    assert done.get("text")
    samples = scrape(base, auth)
    assert grew(samples, "voxserve_engine_rejected_total", **stt) == 1
    assert grew(samples, "voxserve_requests_total", endpoint="/v1/audio/transcriptions", method="POST",
                model="whisper-tiny.en", status="429") == 1  # fmt: skip
    tiny = {"model": "whisper-tiny.en", "kind": "stt"}
    assert grew(samples, "voxserve_model_loads_total", **tiny) == 1

    # VOXSERVE_MODEL_TTL=1: the idle model is unloaded, and the metrics say so.
    wait_for(lambda: grew(scrape(base, auth), "voxserve_model_unloads_total", **tiny) == 1, 30, "an unload")
    assert value(scrape(base, auth), "voxserve_model_loaded", **tiny) == 0

    # VOXSERVE_LOG_FORMAT=json: one JSON object per line, an access line per request.
    response = httpx.get(f"{base}/v1/models", headers=auth)
    request_id = response.headers["x-request-id"]

    def access_line() -> dict[str, object] | None:
        lines = [json.loads(line) for line in keyed_server.log_path.read_text().splitlines() if line.startswith("{")]
        assert any(line["logger"] == "uvicorn.error" and "startup complete" in line["message"] for line in lines)
        return next((line for line in lines if line.get("request_id") == request_id), None)

    wait_for(lambda: access_line() is not None, 10, "the access log line")
    line = access_line()
    assert line is not None
    assert line["logger"] == "voxserve.access" and line["level"] == "INFO"
    assert line["status"] == 200 and line["endpoint"] == "/v1/models" and line["method"] == "GET"
    assert isinstance(line["duration_ms"], float) and "time" in line


def test_metrics_key_policy() -> None:
    assert not metrics_need_key(Settings(host="127.0.0.1"))
    assert not metrics_need_key(Settings(host="::1"))
    assert metrics_need_key(Settings(host="0.0.0.0"))
    assert not metrics_need_key(Settings(host="0.0.0.0", metrics_require_key=False))
    assert metrics_need_key(Settings(host="localhost", metrics_require_key=True))


def test_realtime_sessions_are_counted_while_open() -> None:
    """The gauge follows WebSockets on /v1/realtime from accept to close, whatever the route does inside."""

    async def session(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="realtime")
        await websocket.receive_text()
        await websocket.close()

    runtime = Runtime.build(Settings())
    metrics = Metrics(runtime)
    app = Starlette(routes=[WebSocketRoute("/v1/realtime", session)])
    gauge = "voxserve_realtime_sessions_active"
    with TestClient(MetricsMiddleware(app, metrics, app.routes)) as http:
        with http.websocket_connect("/v1/realtime?intent=transcription", subprotocols=["realtime"]) as socket:
            assert metrics.registry.get_sample_value(gauge, {"kind": "transcription"}) == 1
            assert metrics.registry.get_sample_value(gauge, {"kind": "conversation"}) == 0
            socket.send_text("bye")
        assert metrics.registry.get_sample_value(gauge, {"kind": "transcription"}) == 0
        assert metrics.registry.get_sample_value("voxserve_realtime_sessions_total", {"kind": "transcription"}) == 1


def test_real_transcription_sessions_are_counted(server: Server, client: OpenAI) -> None:
    """On the real server: a live transcription WebSocket counts as `transcription` while it is open,
    whether it says `?intent=transcription` or opens with an ephemeral key minted for transcription
    (what a browser does), and the gauge falls back when it closes."""
    active, total = "voxserve_realtime_sessions_active", "voxserve_realtime_sessions_total"
    before = scrape(server.base_url)
    secret = client.realtime.client_secrets.create(
        session={"type": "transcription", "audio": {"input": {"transcription": {"model": "whisper-1"}}}}
    )
    clip = clip_pcm("en_ls_test-other_367-130732-0001")
    with client.realtime.connect(extra_query={"intent": "transcription"}) as by_intent:
        assert by_intent.recv().type == "session.created"
        with server.client(api_key=secret.value).realtime.connect() as by_key:
            created = by_key.recv()
            assert created.type == "session.created" and created.session.type == "transcription"
            during = scrape(server.base_url)
        # Audio heard over a realtime session counts as audio in, like a file's.
        by_intent.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        by_intent.input_audio_buffer.append(audio=base64.b64encode(clip.tobytes()).decode())
        by_intent.input_audio_buffer.commit()
        for event in by_intent:
            assert event.type != "error", event
            if event.type == "conversation.item.input_audio_transcription.completed":
                break
    wait_for(lambda: value(scrape(server.base_url), active, kind="transcription") == 0, 10, "the sessions to be let go")
    after = scrape(server.base_url)
    assert value(during, active, kind="transcription") == 2
    assert value(during, active, kind="conversation") == 0
    assert value(after, total, kind="transcription") - value(before, total, kind="transcription") == 2
    assert value(after, total, kind="conversation") == value(before, total, kind="conversation")

    def heard(samples: Samples) -> float:
        return sum(v for (name, _), v in samples.items() if name == "voxserve_audio_input_seconds_total")

    assert heard(after) - heard(before) == pytest.approx(len(clip) / 24000, abs=0.05)
