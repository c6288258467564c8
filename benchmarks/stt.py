"""Speech-to-text accuracy and speed on real recordings (dev-speech): voxserve's server against plain faster-whisper.

For each model (whisper-base on every set, whisper-tiny.en on the English ones) and each set (en: short
clips, long: a reading of minutes, multi: other languages), in one run:
- WER (CER for ja/zh) of voxserve's server (the official SDK over HTTP) and of plain faster-whisper with
  its own defaults on the same weights (int8, beam 5, every core), and, on long audio, of faster-whisper's
  BatchedInferencePipeline;
- the time for each file: the server's (upload, decoding and transcription) against plain sequential
  faster-whisper's (decoding and transcription of the same file), which pads every window to 30 s; a long
  file is run once untimed, then timed `--long-runs` times on each side and its median counts (one run of a
  4-minute reading varied by 20% between runs on this shared machine);
- on the first 60 s of the reading, how soon a streamed transcription sends its first delta, and how many
  deltas a 10 s stretch of it gets.

Run: python benchmarks/stt.py [--models whisper-base whisper-tiny.en] [--sets en long multi] [--long-runs 3]
     [--json out.json]
Needs ../shared/data/dev-speech beside the repository. Run it alone on the machine: it reports timings.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from openai import OpenAI

import dev_speech
from harness import mark, server
from voxserve.languages import LANGUAGES

MODELS = ("whisper-base", "whisper-tiny.en")
LONG_TARGET = 0.70  # server time / plain sequential faster-whisper time on long audio
SHORT_TARGET = 3.0  # plain faster-whisper time (padding to 30 s) / server time on short clips
FIRST_DELTA_TARGET = 0.25  # first delta / total time of a streamed 60 s recording


@dataclass
class SetResult:
    model: str
    set: str
    audio_seconds: float = 0.0
    server: dev_speech.Score = field(default_factory=lambda: dev_speech.Score(0, 0))
    plain: dev_speech.Score = field(default_factory=lambda: dev_speech.Score(0, 0))
    batched: dev_speech.Score | None = None
    server_seconds: float = 0.0
    plain_seconds: float = 0.0
    batched_seconds: float = 0.0
    wrong_language: list[str] = field(default_factory=list)
    texts: dict[str, dict[str, str]] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)  # a long file's timings, per side


def median_timed(runs: int, once: Callable[[], tuple[Any, float]]) -> tuple[Any, float, list[float]]:
    """The first run's result, the median of `runs` runs' seconds, and every run's seconds.

    With more than one run, one untimed run comes first on every side: the server loads its second
    instance of the weights for long audio on the first long input (`half_batches.HalfPair`, ~1 s once
    per process), which is loading, as the models' own load is, not decoding."""
    if runs > 1:
        once()
    result, seconds = once()
    times = [seconds] + [once()[1] for _ in range(runs - 1)]
    return result, statistics.median(times), times


def model_path(model: str) -> str:
    from voxserve import bundled
    from voxserve.config import Settings

    if model == "whisper-base":
        return str(bundled.whisper_base_dir(Settings().cache_dir))
    return str(bundled.whisper_tiny_en_dir())


def clips_for(model: str, sets: list[str]) -> dict[str, list[dev_speech.Clip]]:
    english_only = model.endswith(".en")
    return {
        name: [c for c in dev_speech.clips(sets=[name]) if not english_only or c.lang == "en"]
        for name in sets
        if not english_only or name != "multi"
    }


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def streamed(url: str, model: str, data: bytes) -> tuple[float, float, int]:
    """(first delta, done) seconds after the request started, and the number of deltas."""
    start = time.perf_counter()
    first, deltas = 0.0, 0
    with httpx.stream(
        "POST",
        f"{url}/audio/transcriptions",
        files={"file": ("audio.wav", data)},
        data={"model": model, "stream": "true"},
        timeout=600,
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and '"transcript.text.delta"' in line:
                deltas += 1
                first = first or time.perf_counter() - start
    return first, time.perf_counter() - start, deltas


def run_server(
    model: str, sets: dict[str, list[dev_speech.Clip]], results: dict[str, SetResult], long_runs: int
) -> dict[str, Any]:
    log_path = Path(tempfile.gettempdir()) / f"voxserve-stt-bench-{os.getpid()}-{model}.log"
    print(f"[{model}] server (log: {log_path})", flush=True)
    with server(model, log_path) as (_proc, port):
        url = f"http://127.0.0.1:{port}/v1"
        client = OpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
        warm = next(iter(sets.values()))[0]
        client.audio.transcriptions.create(model=model, file=(warm.path.name, warm.path.read_bytes()))
        for name, clips in sets.items():
            for clip in clips:
                data = clip.path.read_bytes()

                def once(data: bytes = data, filename: str = clip.path.name) -> tuple[Any, float]:
                    start = time.perf_counter()
                    out = client.audio.transcriptions.create(
                        model=model, file=(filename, data), response_format="verbose_json"
                    )
                    return out, time.perf_counter() - start

                out, seconds, times = median_timed(long_runs if name == "long" else 1, once)
                results[name].server_seconds += seconds
                if name == "long":
                    results[name].runs.setdefault("vox", []).extend(times)
                results[name].server += dev_speech.score(clip.text, out.text, clip.lang)
                results[name].texts.setdefault(clip.id, {})["voxserve"] = out.text
                if out.language != LANGUAGES.get(clip.lang, clip.lang):
                    results[name].wrong_language.append(f"{clip.id}:{out.language}")
        reading = dev_speech.clips(sets=["long"])[0].audio
        first, total, deltas = streamed(url, model, wav_bytes(reading[: 60 * 16000]))
        _, _, short_deltas = streamed(url, model, wav_bytes(reading[: 10 * 16000]))
    return {"first_delta_s": first, "total_s": total, "deltas": deltas, "deltas_10s": short_deltas}


def run_plain(
    model: str, sets: dict[str, list[dev_speech.Clip]], results: dict[str, SetResult], long_runs: int
) -> None:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    print(f"[{model}] plain faster-whisper", flush=True)
    fw = WhisperModel(model_path(model), device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)
    batched = BatchedInferencePipeline(fw)

    def timed(fn: Callable[[], Any]) -> tuple[str, float]:
        start = time.perf_counter()
        segments, _info = fn()
        text = "".join(s.text for s in segments).strip()
        return text, time.perf_counter() - start

    warm = next(iter(sets.values()))[0]
    timed(lambda: fw.transcribe(str(warm.path), beam_size=5))
    for name, clips in sets.items():
        for clip in clips:
            runs = long_runs if name == "long" else 1
            text, seconds, times = median_timed(
                runs, lambda clip=clip: timed(lambda: fw.transcribe(str(clip.path), beam_size=5))
            )
            results[name].plain_seconds += seconds
            results[name].plain += dev_speech.score(clip.text, text, clip.lang)
            results[name].texts[clip.id]["plain"] = text
            if name == "long":
                results[name].runs.setdefault("plain", []).extend(times)
                text, seconds, times = median_timed(
                    runs, lambda clip=clip: timed(lambda: batched.transcribe(str(clip.path), beam_size=5))
                )
                results[name].runs.setdefault("batch", []).extend(times)
                results[name].batched_seconds += seconds
                results[name].batched = (results[name].batched or dev_speech.Score(0, 0)) + dev_speech.score(
                    clip.text, text, clip.lang
                )
                results[name].texts[clip.id]["batched"] = text


def print_table(results: list[SetResult], streams: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'model':<16} {'set':<6} {'audio s':>8} {'WER vox':>8} {'WER plain':>9} {'WER batch':>9} "
        f"{'RTF vox':>8} {'RTF plain':>9} {'RTF batch':>9} {'speed':>22}  accuracy"
    )
    for r in results:
        batched_wer = f"{r.batched.rate:.2%}" if r.batched else "-"
        batched_rtf = f"{r.batched_seconds / r.audio_seconds:.3f}" if r.batched else "-"
        if r.set == "long":
            ratio = r.server_seconds / r.plain_seconds
            speed = f"vox/plain {ratio:.2f} {mark(ratio <= LONG_TARGET)}"
        else:
            ratio = r.plain_seconds / r.server_seconds
            speed = f"plain/vox {ratio:.2f}x" + (f" {mark(ratio >= SHORT_TARGET)}" if r.set == "en" else "")
        accuracy = mark(r.server.errors <= r.plain.errors)
        print(
            f"{r.model:<16} {r.set:<6} {r.audio_seconds:>8.1f} {r.server.rate:>8.2%} {r.plain.rate:>9.2%} "
            f"{batched_wer:>9} {r.server_seconds / r.audio_seconds:>8.3f} {r.plain_seconds / r.audio_seconds:>9.3f} "
            f"{batched_rtf:>9} {speed:>22}  {accuracy} ({r.server.errors} vs {r.plain.errors} errors)"
        )
        if r.runs:
            timings = "; ".join(f"{side} {', '.join(f'{t:.2f}' for t in times)}" for side, times in r.runs.items())
            print(f"{'':<24} long runs, seconds (median counts): {timings}")
        if r.wrong_language:
            print(f"{'':<24} language missed: {', '.join(r.wrong_language)}")
    print()
    for model, s in streams.items():
        fraction = s["first_delta_s"] / s["total_s"]
        print(
            f"{model:<16} stream, 60 s reading: first delta {s['first_delta_s']:.2f} s of {s['total_s']:.2f} s "
            f"= {fraction:.0%} (<= {FIRST_DELTA_TARGET:.0%} {mark(fraction <= FIRST_DELTA_TARGET)}), "
            f"{s['deltas']} deltas; 10 s stretch: {s['deltas_10s']} deltas ({mark(s['deltas_10s'] > 1)})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sets", nargs="+", choices=dev_speech.SETS, default=list(dev_speech.SETS))
    parser.add_argument("--long-runs", type=int, default=3, help="runs of each long file per side (median)")
    parser.add_argument("--json", type=Path, help="also write the figures and transcripts here")
    args = parser.parse_args()
    print(f"cores={os.cpu_count()}; plain faster-whisper: int8, beam 5, cpu_threads=all, its defaults otherwise")
    all_results: list[SetResult] = []
    streams: dict[str, dict[str, Any]] = {}
    for model in args.models:
        sets = clips_for(model, args.sets)
        results = {
            name: SetResult(model, name, sum(dev_speech.seconds(c) for c in clips)) for name, clips in sets.items()
        }
        streams[model] = run_server(model, sets, results, args.long_runs)
        run_plain(model, sets, results, args.long_runs)
        all_results += results.values()
    print_table(all_results, streams)
    if args.json:
        payload = {
            "sets": [
                {
                    "model": r.model,
                    "set": r.set,
                    "audio_seconds": r.audio_seconds,
                    "wer_voxserve": r.server.rate,
                    "wer_plain": r.plain.rate,
                    "wer_batched": r.batched.rate if r.batched else None,
                    "seconds_voxserve": r.server_seconds,
                    "seconds_plain": r.plain_seconds,
                    "seconds_batched": r.batched_seconds,
                    "long_runs_seconds": r.runs,
                    "wrong_language": r.wrong_language,
                    "texts": r.texts,
                }
                for r in all_results
            ],
            "streams": streams,
        }
        args.json.write_text(json.dumps(payload, indent=2, ensure_ascii=False))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
