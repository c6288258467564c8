"""Prometheus metrics: `GET /metrics`, the middleware that measures every request, and the collector
that reads the engines' queues and loaded models when scraped.

Engines never import this: they report model loads and finished audio work through plain callbacks
(`Runtime.observe`), and their gate counters are read here at scrape time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxserve import __version__
from voxserve.config import Settings
from voxserve.engines.events import AudioWork, ModelEvent
from voxserve.errors import ModelNotFound
from voxserve.runtime import Runtime
from voxserve.server.run import is_loopback

access_log = logging.getLogger("voxserve.access")
router = APIRouter()

# The key under the request's state where the body readers put the model the client named.
_MODEL_KEY = "requested_model"
_REALTIME_PATH = "/v1/realtime"

# Request latency spans a health check (ms) to a long upload or a streamed answer (minutes).
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Engine time over audio time: 0.1 is ten times faster than real time.
_RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5)
_LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


def metrics_need_key(settings: Settings) -> bool:
    """Whether /metrics asks for an API key when keys are configured: by default not on a loopback
    bind (a local Prometheus or a person), but yes where the server is reachable by others."""
    if settings.metrics_require_key is not None:
        return settings.metrics_require_key
    return not is_loopback(settings.host)


def note_requested_model(request: Request, model: object) -> None:
    """Body readers call this so the request's metrics and access log carry the model it named."""
    if isinstance(model, str):
        request.scope.setdefault("state", {})[_MODEL_KEY] = model


class _EngineCollector(Collector):
    """Engine queues, active work, refusals and loaded models, read from the runtime when scraped."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        gates = self.runtime.gates
        families = [
            (GaugeMetricFamily, "voxserve_engine_active", "Work running on the engine now.", "active"),
            (GaugeMetricFamily, "voxserve_engine_queue_depth", "Requests waiting for the engine.", "queued"),
            (GaugeMetricFamily, "voxserve_engine_concurrency", "Work the engine runs at once.", "concurrency"),
            (GaugeMetricFamily, "voxserve_engine_queue_limit", "Requests that may wait; beyond: 429.", "max_queue"),
            (CounterMetricFamily, "voxserve_engine_rejected", "Requests refused with 429 (queue full).", "rejected"),
        ]
        for family_type, name, doc, attribute in families:
            family = family_type(name, doc, labels=["engine"])
            for gate in gates:
                family.add_metric([gate.name], float(getattr(gate, attribute)))
            yield family
        loaded = GaugeMetricFamily("voxserve_model_loaded", "1 for each model in memory now.", labels=["model", "kind"])
        registry = self.runtime.registry
        for model_id in registry.loaded_ids():
            loaded.add_metric([model_id, registry.resolve(model_id).kind], 1.0)
        yield loaded


class Metrics:
    """Every metric of one app, in a registry of its own (tests run several apps in one process)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        r = self.registry
        Info("voxserve_build", "The running voxserve.", registry=r).info({"version": __version__})
        self.requests = Counter(
            "voxserve_requests", "HTTP requests by endpoint, model and status.",
            ["endpoint", "method", "model", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "voxserve_request_duration_seconds", "From the request's arrival to the last byte of the response.",
            ["endpoint", "method", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.first_byte = Histogram(
            "voxserve_time_to_first_byte_seconds",
            "From the request's arrival to the first byte of the response body (streamed audio, events).",
            ["endpoint", "method", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.in_progress = Gauge("voxserve_requests_in_progress", "HTTP requests being answered now.", registry=r)
        self.audio_in = Counter(
            "voxserve_audio_input_seconds", "Seconds of audio transcribed (every surface).", ["model"], registry=r
        )
        self.audio_out = Counter(
            "voxserve_audio_output_seconds", "Seconds of speech synthesized (every surface).", ["model"], registry=r
        )
        self.compute = Counter(
            "voxserve_engine_compute_seconds", "Engine time spent on finished audio work.",
            ["engine", "model"], registry=r,
        )  # fmt: skip
        self.rtf = Histogram(
            "voxserve_real_time_factor", "Engine time over audio duration, per job (0.1 = 10x faster than real time).",
            ["engine", "model"], buckets=_RTF_BUCKETS, registry=r,
        )  # fmt: skip
        self.loads = Counter("voxserve_model_loads", "Models loaded into memory.", ["model", "kind"], registry=r)
        self.load_failures = Counter(
            "voxserve_model_load_failures", "Model loads that failed.", ["model", "kind"], registry=r
        )
        self.unloads = Counter(
            "voxserve_model_unloads", "Models unloaded after their idle TTL.", ["model", "kind"], registry=r
        )
        self.load_time = Histogram(
            "voxserve_model_load_duration_seconds", "Time to load a model.", ["model", "kind"],
            buckets=_LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        # Counted where the WebSocket is accepted and closed, whatever the realtime engine does inside.
        self.realtime_active = Gauge(
            "voxserve_realtime_sessions_active", "Realtime WebSocket sessions open now.", ["kind"], registry=r
        )
        self.realtime_sessions = Counter(
            "voxserve_realtime_sessions", "Realtime WebSocket sessions accepted.", ["kind"], registry=r
        )
        for kind in ("transcription", "conversation"):
            self.realtime_active.labels(kind)
            self.realtime_sessions.labels(kind)
        r.register(_EngineCollector(runtime))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        runtime.observe(self.model_event, self.audio_work)

    def model_event(self, event: ModelEvent) -> None:
        if event.action == "load":
            self.loads.labels(event.model, event.kind).inc()
            self.load_time.labels(event.model, event.kind).observe(event.seconds)
        elif event.action == "load_failed":
            self.load_failures.labels(event.model, event.kind).inc()
        else:
            self.unloads.labels(event.model, event.kind).inc()

    def audio_work(self, work: AudioWork) -> None:
        counter = self.audio_in if work.engine == "speech-to-text" else self.audio_out
        counter.labels(work.model).inc(work.audio_seconds)
        self.compute.labels(work.engine, work.model).inc(work.compute_seconds)
        if work.audio_seconds > 0:
            self.rtf.labels(work.engine, work.model).observe(work.compute_seconds / work.audio_seconds)

    def model_label(self, requested: object) -> str:
        """The local model behind the name a request gave; never the raw name, which a client could
        make up without end (one label value per typo would grow the metrics forever)."""
        if not isinstance(requested, str) or not requested:
            return ""
        try:
            return self.runtime.registry.resolve(requested).id
        except ModelNotFound:
            return "other"

    def render(self) -> bytes:
        return generate_latest(self.registry)


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def route_templates(routes: Iterable[BaseRoute]) -> list[tuple[re.Pattern[str], str]]:
    """(regex, template) of every route, included routers' too (FastAPI wraps them: `original_router`)."""
    found: list[tuple[re.Pattern[str], str]] = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        if nested is not None:
            found += route_templates(nested.routes)
            continue
        regex, path = getattr(route, "path_regex", None), getattr(route, "path", None)
        if regex is not None and isinstance(path, str):
            found.append((regex, path))
    return found


def endpoint_of(scope: Scope, templates: Sequence[tuple[re.Pattern[str], str]]) -> str:
    """The route template a request matched (`/v1/models/{model_id:path}`), so label values stay few.

    Routing records the route in the scope; a request refused before routing (401, 413) is matched
    against the templates instead.
    """
    route = scope.get("route")
    if isinstance(getattr(route, "path", None), str):
        return str(route.path)
    for regex, template in templates:
        if regex.match(scope["path"]):
            return template
    return "other"


class MetricsMiddleware:
    """Measures every HTTP request (also those refused before routing: 401, 413) and counts realtime
    WebSocket sessions; with `access_log`, writes one structured line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable[BaseRoute], access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = route_templates(routes)
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"].startswith(_REALTIME_PATH):
            await self._websocket(scope, receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        first_byte: float | None = None

        async def measured_send(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and first_byte is None and message.get("body"):
                first_byte = time.perf_counter() - started
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, measured_send)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            endpoint = endpoint_of(scope, self.templates)
            state = scope.get("state", {})
            model = self.metrics.model_label(state.get(_MODEL_KEY))
            method = scope["method"]
            self.metrics.requests.labels(endpoint, method, model, str(status)).inc()
            self.metrics.latency.labels(endpoint, method, model).observe(elapsed)
            if first_byte is not None:
                self.metrics.first_byte.labels(endpoint, method, model).observe(first_byte)
            if self.access_log:
                access_log.info(
                    "%s %s %d",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "request_id": state.get("request_id"),
                        "method": method,
                        "path": scope["path"],
                        "endpoint": endpoint,
                        "status": status,
                        "model": state.get(_MODEL_KEY),
                        "duration_ms": round(elapsed * 1000, 1),
                        "first_byte_ms": None if first_byte is None else round(first_byte * 1000, 1),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        kind = "transcription" if query.get("intent") == ["transcription"] else "conversation"
        accepted = False

        async def counted_send(message: Message) -> None:
            nonlocal accepted, kind
            if message["type"] == "websocket.accept" and not accepted:
                accepted = True
                # An ephemeral key minted for transcription opens a transcription session without
                # `?intent=` (the auth middleware inside has left the verified key in the scope's state).
                key = (scope.get("state") or {}).get("ephemeral_key")
                if getattr(key, "kind", None) == "transcription":
                    kind = "transcription"
                self.metrics.realtime_active.labels(kind).inc()
                self.metrics.realtime_sessions.labels(kind).inc()
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            if accepted:
                self.metrics.realtime_active.labels(kind).dec()
