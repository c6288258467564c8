"""Soak: mixed traffic at about twice what one server can serve, for a long time, against one server.

Run: python benchmarks/soak.py [--minutes 30] [--overload 2.0] [--json out.json] [--base-url URL --pid PID]

Traffic: transcriptions in every response format (and streamed, with logprobs, translations), speech in
every format (streamed, SSE, whole), chat with and without audio in and out (streamed too), plus any
scenario registered with `scenario()` (the realtime sessions join here when they exist: see
`realtime_scenarios`). Arrivals are open-loop (Poisson) at `--overload` times the rate the server
sustained in a closed-loop calibration, so queues fill and the server must shed load with 429s.

Prints: requests by kind with 200 / 429 / other errors and p50 / p99 latency of admitted requests;
server RSS at the end of warm-up, at the end, and its growth; /health latency under load; whether the
server is alive and idle afterwards. Targets (issue 10): 0 errors other than 429, RSS growth <= 50 MB
after warm-up, p99 of admitted requests bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness import mark, server

RSS_TARGET_MB = 50.0
PRELOAD = "whisper-base,voice:en_US-joe-medium,smollm2-135m"
SENTENCES = [
    "The quarterly report shows that revenue grew by eleven percent compared with last year.",
    "Please remember to water the tomatoes before you leave for the airport on Friday morning.",
    "Turn left at the second traffic light, then follow the signs to the hospital car park.",
]

Scenario = Callable[[httpx.AsyncClient, "Clips"], Awaitable[None]]


class Refused(Exception):
    """A 429: the server shed the request, as it should under overload."""


class Failed(Exception):
    """Anything else that is not a complete, well-formed answer."""


@dataclass
class Clips:
    """Spoken audio made by the server's own voice at start-up, in the upload formats."""

    audio: dict[str, bytes]  # container -> bytes
    question_wav_b64: str


@dataclass
class Tally:
    ok: int = 0
    refused: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


SCENARIOS: dict[str, tuple[float, Scenario]] = {}


def scenario(name: str, weight: float = 1.0) -> Callable[[Scenario], Scenario]:
    """Register a kind of request with its share of the traffic."""

    def register(fn: Scenario) -> Scenario:
        SCENARIOS[name] = (weight, fn)
        return fn

    return register


def _check(response: httpx.Response) -> None:
    if response.status_code == 429:
        raise Refused
    if response.status_code != 200:
        raise Failed(f"HTTP {response.status_code}: {response.text[:200]}")


def _check_events(response: httpx.Response) -> list[dict[str, Any]]:
    _check(response)
    events = []
    for line in response.text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            if "error" in event:
                raise Failed(f"error event after 200: {event['error']}")
            events.append(event)
    if not events:
        raise Failed("empty event stream")
    return events


# --- transcriptions -------------------------------------------------------------------------------


def _transcription(fmt: str, container: str, **extra: str) -> Scenario:
    async def run(http: httpx.AsyncClient, clips: Clips) -> None:
        data = {"model": "whisper-1", "response_format": fmt, **extra}
        files = {"file": (f"clip.{container}", clips.audio[container])}
        response = await http.post("/v1/audio/transcriptions", data=data, files=files)
        if extra.get("stream") == "true":
            events = _check_events(response)
            if events[-1].get("type") != "transcript.text.done":
                raise Failed(f"stream did not end with transcript.text.done: {events[-1]}")
            return
        _check(response)
        body = response.text
        if fmt in ("json", "verbose_json") and not json.loads(body).get("text"):
            raise Failed(f"empty transcript: {body[:200]}")
        if fmt in ("text", "srt", "vtt") and len(body.strip()) < 10:
            raise Failed(f"empty transcript: {body[:200]}")

    return run


for _fmt, _container in (("json", "mp3"), ("text", "wav"), ("srt", "flac"), ("vtt", "ogg")):
    scenario(f"stt {_fmt} ({_container})")(_transcription(_fmt, _container))
scenario("stt verbose_json words")(
    _transcription("verbose_json", "wav", **{"timestamp_granularities[]": "word"})  # type: ignore[arg-type]
)
scenario("stt stream logprobs")(_transcription("json", "mp3", stream="true", **{"include[]": "logprobs"}))


@scenario("stt translation")
async def _translation(http: httpx.AsyncClient, clips: Clips) -> None:
    files = {"file": ("clip.mp3", clips.audio["mp3"])}
    response = await http.post("/v1/audio/translations", data={"model": "whisper-1"}, files=files)
    _check(response)
    if not response.json().get("text"):
        raise Failed("empty translation")


# --- speech -----------------------------------------------------------------------------------------


def _speech(fmt: str, **extra: Any) -> Scenario:
    async def run(http: httpx.AsyncClient, clips: Clips) -> None:
        body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": random.choice(SENTENCES)}
        body |= {"response_format": fmt, **extra}
        response = await http.post("/v1/audio/speech", json=body)
        if extra.get("stream_format") == "sse":
            events = _check_events(response)
            if events[-1].get("type") != "speech.audio.done":
                raise Failed(f"SSE did not end with speech.audio.done: {events[-1]}")
            return
        _check(response)
        if len(response.content) < 1000:
            raise Failed(f"{fmt}: only {len(response.content)} bytes")

    return run


for _fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
    scenario(f"tts {_fmt}")(_speech(_fmt))
scenario("tts wav whole")(_speech("wav", stream=False))
scenario("tts sse")(_speech("pcm", stream_format="sse"))


# --- chat -------------------------------------------------------------------------------------------


def _chat(*, audio_in: bool, audio_out: bool, stream: bool) -> Scenario:
    async def run(http: httpx.AsyncClient, clips: Clips) -> None:
        content: Any = "Name one fruit, in one short sentence."
        if audio_in:
            content = [{"type": "input_audio", "input_audio": {"data": clips.question_wav_b64, "format": "wav"}}]
        body: dict[str, Any] = {
            "model": "gpt-4o-audio-preview",
            "messages": [
                {"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": content},
            ],
            "max_tokens": 24,
            "stream": stream,
        }
        if audio_out:
            body |= {
                "modalities": ["text", "audio"],
                "audio": {"voice": "alloy", "format": "pcm16" if stream else "wav"},
            }
        response = await http.post("/v1/chat/completions", json=body)
        if stream:
            _check_events(response)
            if not response.text.rstrip().endswith("data: [DONE]"):
                raise Failed("chat stream without [DONE]")
            return
        _check(response)
        message = response.json()["choices"][0]["message"]
        if audio_out and not (message.get("audio") or {}).get("data"):
            raise Failed("no audio in the answer")
        if not audio_out and not message.get("content"):
            raise Failed("empty answer")

    return run


scenario("chat text")(_chat(audio_in=False, audio_out=False, stream=False))
scenario("chat text stream")(_chat(audio_in=False, audio_out=False, stream=True))
scenario("chat audio in")(_chat(audio_in=True, audio_out=False, stream=False))
scenario("chat audio in+out")(_chat(audio_in=True, audio_out=True, stream=False))
scenario("chat audio out stream")(_chat(audio_in=False, audio_out=True, stream=True))


def realtime_scenarios() -> None:
    """Hook for the Realtime API (issue 8): register session scenarios here with `scenario(...)`, e.g. a
    transcription session that appends a clip and waits for `...completed`, and a conversation turn.
    Each is one coroutine taking the shared httpx client (for its base URL) and the clips."""


# --- the run ----------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def make_clips(http: httpx.AsyncClient) -> Clips:
    text = " ".join(SENTENCES[:2])
    audio = {}
    for container, fmt in (("mp3", "mp3"), ("wav", "wav"), ("flac", "flac"), ("ogg", "opus")):
        body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt, "stream": False}
        response = await http.post("/v1/audio/speech", json=body)
        response.raise_for_status()
        audio[container] = response.content
    body = {"model": "tts-1", "voice": "alloy", "input": "What is your favourite fruit?", "response_format": "wav"}
    question = (await http.post("/v1/audio/speech", json={**body, "stream": False})).content
    return Clips(audio, base64.b64encode(question).decode())


async def one(http: httpx.AsyncClient, clips: Clips, name: str, tallies: dict[str, Tally]) -> None:
    tally = tallies[name]
    started = time.perf_counter()
    try:
        await SCENARIOS[name][1](http, clips)
    except Refused:
        tally.refused += 1
        return
    except Exception as exc:  # a failed answer, a broken stream, a dropped connection, a timeout
        tally.errors += 1
        if len(tally.examples) < 3:
            tally.examples.append(f"{type(exc).__name__}: {exc}"[:300])
        return
    tally.ok += 1
    tally.latencies.append(time.perf_counter() - started)


def pick(rng: random.Random) -> str:
    names = list(SCENARIOS)
    return rng.choices(names, weights=[SCENARIOS[n][0] for n in names])[0]


async def calibrate(http: httpx.AsyncClient, clips: Clips, seconds: float, workers: int, rng: random.Random) -> float:
    """Requests per second the server completes with `workers` clients always waiting on it."""
    done = 0
    deadline = time.monotonic() + seconds
    tallies: dict[str, Tally] = defaultdict(Tally)

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await one(http, clips, pick(rng), tallies)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return done / (time.monotonic() - started)


async def health_probe(http: httpx.AsyncClient, stop: asyncio.Event, timings: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        with contextlib.suppress(httpx.HTTPError):
            await http.get("/health")
            timings.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def soak(base_url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    random.seed(args.seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base_url, timeout=args.timeout, limits=limits) as http:
        clips = await make_clips(http)
        capacity = await calibrate(http, clips, args.calibrate_seconds, args.workers, rng)
        rate = capacity * args.overload
        print(f"calibration: {capacity:.2f} requests/s with {args.workers} closed-loop clients; "
              f"offering {rate:.2f}/s for {args.minutes:g} min", flush=True)  # fmt: skip

        tallies: dict[str, Tally] = defaultdict(Tally)
        warmup_tallies: dict[str, Tally] = defaultdict(Tally)
        rss: list[tuple[float, float]] = []
        health: list[float] = []
        stop = asyncio.Event()
        prober = asyncio.create_task(health_probe(http, stop, health))
        tasks: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        total = args.minutes * 60
        warmup = min(args.warmup_minutes * 60, total / 2)
        next_report = started + 60
        next_rss = started
        while (now := time.monotonic()) - started < total:
            if now >= next_rss:
                rss.append((now - started, rss_mib(pid)))
                next_rss += 5
            if now >= next_report:
                busy = sum(len(t.latencies) for t in tallies.values())
                print(f"  {(now - started) / 60:5.1f} min: {len(tasks)} in flight, {busy} admitted, "
                      f"rss {rss[-1][1]:.0f} MiB", flush=True)  # fmt: skip
                next_report += 60
            book = warmup_tallies if now - started < warmup else tallies
            task = asyncio.create_task(one(http, clips, pick(rng), book))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(rate))
        if tasks:
            await asyncio.wait(tasks, timeout=args.timeout + 10)
        stop.set()
        await prober
        rss.append((time.monotonic() - started, rss_mib(pid)))

        idle_after = None
        for _ in range(120):
            state = (await http.get("/health")).json()
            if all(state[k]["active"] == 0 and state[k]["queued"] == 0 for k in ("stt", "tts", "chat")):
                idle_after = True
                break
            await asyncio.sleep(0.5)
        alive = (await http.get("/health")).status_code == 200

    def near(t: float) -> float:
        window = [r for at, r in rss if abs(at - t) <= 30] or [min(rss, key=lambda s: abs(s[0] - t))[1]]
        return statistics.median(window)

    rss_warm, rss_end = near(warmup), near(rss[-1][0])
    return {
        "capacity_rps": capacity,
        "offered_rps": rate,
        "minutes": args.minutes,
        "warmup_minutes": warmup / 60,
        "kinds": {
            name: {
                "ok": t.ok,
                "refused_429": t.refused,
                "errors": t.errors,
                "p50_s": statistics.median(t.latencies) if t.latencies else None,
                "p99_s": _p99(t.latencies),
                "examples": t.examples,
            }
            for name, t in sorted(tallies.items())
        },
        "warmup": {
            "ok": sum(t.ok for t in warmup_tallies.values()),
            "refused_429": sum(t.refused for t in warmup_tallies.values()),
            "errors": sum(t.errors for t in warmup_tallies.values()),
            "examples": [e for t in warmup_tallies.values() for e in t.examples][:5],
        },
        "rss_mib": {
            "warmup_end": rss_warm,
            "end": rss_end,
            "growth": rss_end - rss_warm,
            "max": max(r for _, r in rss),
        },
        "rss_samples": rss,
        "health_p99_s": _p99(health),
        "health_max_s": max(health) if health else None,
        "alive_after": alive,
        "idle_after": bool(idle_after),
    }


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def print_report(result: dict[str, Any], log_text: str) -> int:
    print(f"\n{'kind':<26}{'200':>7}{'429':>7}{'errors':>8}{'p50 s':>9}{'p99 s':>9}")
    ok = refused = errors = 0
    latencies_p99 = []
    for name, k in result["kinds"].items():
        p50 = f"{k['p50_s']:.2f}" if k["p50_s"] is not None else "-"
        p99 = f"{k['p99_s']:.2f}" if k["p99_s"] is not None else "-"
        print(f"{name:<26}{k['ok']:>7}{k['refused_429']:>7}{k['errors']:>8}{p50:>9}{p99:>9}")
        ok, refused, errors = ok + k["ok"], refused + k["refused_429"], errors + k["errors"]
        if k["p99_s"] is not None:
            latencies_p99.append(k["p99_s"])
        for example in k["examples"]:
            print(f"    {example}")
    print(f"{'all':<26}{ok:>7}{refused:>7}{errors:>8}")
    rss = result["rss_mib"]
    tracebacks = log_text.count("Traceback")
    server_errors = log_text.count('" 500')
    worst_p99 = max(latencies_p99, default=float("nan"))
    print()
    print(f"capacity (closed loop) {result['capacity_rps']:.2f} req/s; offered {result['offered_rps']:.2f} req/s "
          f"({result['offered_rps'] / result['capacity_rps']:.1f}x) for {result['minutes']:g} min, "
          f"warm-up {result['warmup_minutes']:.1f} min")  # fmt: skip
    warm = result["warmup"]
    errors_all = errors + warm["errors"]
    print(f"errors other than 429, whole run        {errors_all:>8}   target 0        {mark(errors_all == 0)}")
    print(f"warm-up: 200 / 429 / errors             {warm['ok']:>8} / {warm['refused_429']} / {warm['errors']}")
    for example in warm["examples"]:
        print(f"    warm-up: {example}")
    print(f"RSS at warm-up end / end / max (MiB)    {rss['warmup_end']:>8.0f} / {rss['end']:.0f} / {rss['max']:.0f}")
    growth_ok = rss["growth"] <= RSS_TARGET_MB
    target = f"target <= {RSS_TARGET_MB:g}"
    print(f"RSS growth after warm-up (MiB)          {rss['growth']:>8.1f}   {target}   {mark(growth_ok)}")
    print(f"worst per-kind p99 of admitted (s)      {worst_p99:>8.2f}")
    health_p99, health_max = result["health_p99_s"] or 0.0, result["health_max_s"] or 0.0
    print(f"/health p99 / max under load (s)        {health_p99:>8.3f} / {health_max:.3f}")
    print(f"server alive / idle afterwards          {result['alive_after']!s:>8} / {result['idle_after']}")
    print(f"server log: tracebacks / 500s           {tracebacks:>8} / {server_errors}")
    passed = errors_all == 0 and growth_ok and result["alive_after"] and result["idle_after"] and not tracebacks
    return 0 if passed else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="excluded from RSS growth and errors")
    parser.add_argument("--overload", type=float, default=2.0, help="offered rate / calibrated capacity")
    parser.add_argument("--calibrate-seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=5, help="closed-loop clients while calibrating")
    parser.add_argument("--timeout", type=float, default=180.0, help="client timeout per request (s)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--base-url", help="soak a running server instead of starting one (needs --pid)")
    parser.add_argument("--pid", type=int, help="the running server's pid, for its RSS")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    realtime_scenarios()

    if args.base_url:
        if not args.pid:
            parser.error("--base-url needs --pid")
        result = asyncio.run(soak(args.base_url, args.pid, args))
        log_text = ""
    else:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "server.log"
            with server(PRELOAD, log) as (proc, port):
                result = asyncio.run(soak(f"http://127.0.0.1:{port}", proc.pid, args))
            log_text = log.read_text(errors="replace")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return print_report(result, log_text)


if __name__ == "__main__":
    sys.exit(main())
