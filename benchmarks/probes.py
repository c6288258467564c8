"""Hostile and clumsy client probes, grouped by class, against one real server (issue 10's acceptance).

Run: python benchmarks/probes.py [--only json speech ...] [--base-url URL --api-key KEY]

Each probe is one request (or one raw connection) that a careless or malicious client could send. After
every probe: no 5xx, no broken 200 (a body cut short, an error event after 200), every error in the
OpenAI envelope with a 4xx status. After every group: the server is alive and idle (/health shows no
active or queued work within a few seconds). Prints a table per group and every failure; exits 1 on any.
By default it starts its own server with API keys and short read deadlines (2 s / 2 s / 6 s) so the
slow-client group is quick; against another server (--base-url) the slow-client group takes as long as
that server's deadlines.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from harness import free_port
from prober import Group, Prober
from probes_connections import group_disconnects, group_overload, group_slow
from probes_requests import group_auth_and_routes, group_chat, group_json, group_speech_fields, group_speech_text
from probes_uploads import group_audio, group_forms, group_oversized

KEY = "sk-probe-key"
DEADLINES = {"VOXSERVE_HEADER_TIMEOUT": "2", "VOXSERVE_BODY_IDLE_TIMEOUT": "2", "VOXSERVE_BODY_TIMEOUT": "6"}


def run(p: Prober, groups: list[str], keyed: bool) -> list[Group]:
    clip_response = p.http.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "voice": "alloy",
            "input": "Testing the server with a short clip.",
            "response_format": "wav",
            "stream": False,
        },
    )
    clip_response.raise_for_status()
    clip = clip_response.content
    long_clip = p.http.post(
        "/v1/audio/speech",
        json={
            "model": "tts-1",
            "voice": "alloy",
            "input": "A sentence to make the clip long. " * 30,
            "response_format": "wav",
            "stream": False,
        },
    ).content
    question_b64 = base64.b64encode(clip).decode()
    table: dict[str, Callable[[], None]] = {
        "json": lambda: group_json(p),
        "speech-fields": lambda: group_speech_fields(p),
        "speech-text": lambda: group_speech_text(p),
        "forms": lambda: group_forms(p, clip),
        "audio": lambda: group_audio(p, clip),
        "oversized": lambda: group_oversized(p),
        "chat": lambda: group_chat(p, question_b64),
        "disconnects": lambda: group_disconnects(p, long_clip),
        "slow": lambda: group_slow(p),
        "overload": lambda: group_overload(p, long_clip[: len(long_clip) // 2]),
        "auth-routes": lambda: group_auth_and_routes(p, keyed),
    }
    done = []
    for name in groups:
        p.group = Group(name)
        started = time.monotonic()
        table[name]()
        p.group.after = p.alive_and_idle()
        done.append(p.group)
        bad = sum(1 for o in p.group.outcomes if o.problem)
        print(
            f"{name:<14} {len(p.group.outcomes):>4} probes  {bad:>3} failed  {time.monotonic() - started:6.1f} s  "
            f"statuses {dict(Counter(o.status for o in p.group.outcomes))}  after: {p.group.after or 'alive, idle'}",
            flush=True,
        )
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    groups = [
        "json",
        "speech-fields",
        "speech-text",
        "forms",
        "audio",
        "oversized",
        "chat",
        "disconnects",
        "slow",
        "overload",
        "auth-routes",
    ]
    parser.add_argument("--only", nargs="+", choices=groups, default=groups)
    parser.add_argument("--base-url", help="probe a running server instead of starting one")
    parser.add_argument("--api-key", help="its API key, if it has keys")
    args = parser.parse_args()

    if args.base_url:
        result = run(Prober(args.base_url, args.api_key), args.only, keyed=bool(args.api_key))
        log_text = ""
    else:
        import subprocess

        port = free_port()
        env = (
            os.environ
            | DEADLINES
            | {
                "VOXSERVE_API_KEYS": KEY,
                "VOXSERVE_MAX_AUDIO_SECONDS": "600",
                "VOXSERVE_STT_QUEUE": "4",
                "VOXSERVE_MODEL_TTL": "-1",
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "server.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "voxserve", "serve", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                for _ in range(600):
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
                result = run(Prober(f"http://127.0.0.1:{port}", KEY), args.only, keyed=True)
                alive = proc.poll() is None
            finally:
                proc.terminate()
                proc.wait(15)
            log_text = log.read_text(errors="replace")
        if not alive:
            print("THE SERVER DIED")
    failures = [(g.name, o) for g in result for o in g.outcomes if o.problem]
    after = [(g.name, g.after) for g in result if g.after]
    for group, outcome in failures:
        print(f"FAIL [{group}] {outcome.name}: {outcome.problem}")
    for group, problem in after:
        print(f"FAIL [{group}] after the group: {problem}")
    total = sum(len(g.outcomes) for g in result)
    print(f"\n{total} probes in {len(result)} groups: {len(failures)} failed; ", end="")
    print(f"groups leaving the server busy or dead: {len(after)}")
    if log_text:
        tracebacks, errors = log_text.count("Traceback"), log_text.count('" 500')
        print(f"server log: {tracebacks} tracebacks, {errors} responses with status 500")
    return 1 if failures or after else 0


if __name__ == "__main__":
    sys.exit(main())
