"""What glibc malloc's settings cost speech-to-text: the English clips transcribed in-process, one fresh process
per setting, the settings interleaved (A B C A B C ...) so that a host that drifts drifts for all of them.

Each variant is a list of glibc knobs, applied with mallopt before the model loads (as `process_memory.tune`
does): `mmap=4M` (a fixed mmap threshold), `trim=128K`, `arena=2`, `release` (malloc_trim(0) after every
transcription), `hugetlb` (GLIBC_TUNABLES=glibc.malloc.hugetlb=1: transparent huge pages for malloc's own
mmaps, read by glibc at start-up). `off` is glibc's defaults. Per variant and round it prints the seconds for
all clips, the real-time factor, the minor page faults per clip and the peak RSS; text differences between
variants would be a bug, so it checks that every variant heard the same words.

Run: python benchmarks/stt_malloc.py [--model whisper-base] [--rounds 2] [--variants off mmap=4M,trim=128K,arena=2]
Run it alone on the machine: it reports timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CURRENT = "mmap=4M,trim=128K,arena=2"
DEFAULT_VARIANTS = ("off", CURRENT, "mmap=32M,trim=128K,arena=2", "arena=2", f"{CURRENT},hugetlb")
_UNITS = {"K": 1024, "M": 1024 * 1024}


def _size(text: str) -> int:
    return int(text[:-1]) * _UNITS[text[-1]] if text[-1] in _UNITS else int(text)


def parse(variant: str) -> dict[str, int | bool]:
    knobs: dict[str, int | bool] = {}
    if variant == "off":
        return knobs
    for part in variant.split(","):
        key, _, value = part.partition("=")
        knobs[key] = _size(value) if value else True
    return knobs


def child(variant: str, model: str, limit: int) -> dict[str, object]:
    import ctypes

    knobs = parse(variant)
    libc = ctypes.CDLL("libc.so.6")
    for key, param in (("trim", -1), ("mmap", -3), ("arena", -8)):
        if key in knobs and not libc.mallopt(param, int(knobs[key])):
            raise SystemExit(f"mallopt({param}, {knobs[key]}) failed")
    sys.path.insert(0, str(Path(__file__).parent))
    import dev_speech
    from stt import model_path
    from voxserve.engines.whisper import TranscribeOptions, WhisperEngine

    clips = dev_speech.clips(sets=["en"])[: limit or None]
    audios = [clip.audio for clip in clips]
    engine = WhisperEngine.load(model, model_path(model), cpu_threads=os.cpu_count() or 1, num_workers=2)
    engine.start(audios[0], TranscribeOptions()).run_to_end()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    texts = []
    start = time.perf_counter()
    for audio in audios:
        texts.append(engine.start(audio, TranscribeOptions()).run_to_end().text)
        if knobs.get("release"):
            libc.malloc_trim(0)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return {
        "seconds": seconds,
        "audio": sum(len(a) for a in audios) / 16000,
        "faults_per_clip": faults / len(audios),
        "peak_mib": int(hwm.split()[1]) / 1024,
        "texts": texts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS))
    parser.add_argument("--clips", type=int, default=0, help="only the first N English clips (0: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.clips)))
        return 0
    results: dict[str, list[dict[str, object]]] = {v: [] for v in args.variants}
    for round_ in range(args.rounds):
        for variant in args.variants:
            env = dict(os.environ)
            if "hugetlb" in parse(variant):
                env["GLIBC_TUNABLES"] = "glibc.malloc.hugetlb=1"
            cmd = [sys.executable, __file__, "--model", args.model, "--clips", str(args.clips), "--child", variant]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            results[variant].append(row)
            print(
                f"round {round_ + 1} {variant:<36} {row['seconds']:7.2f} s  RTF {row['seconds'] / row['audio']:.4f}  "
                f"faults/clip {row['faults_per_clip']:8.0f}  peak {row['peak_mib']:6.0f} MiB",
                flush=True,
            )
    reference = results[args.variants[0]][0]["texts"]
    print(f"\n{'variant':<36} {'RTF each round':<28} {'median':>7} {'vs first':>8} {'faults/clip':>11} {'peak MiB':>8}")
    base = statistics.median(r["seconds"] for r in results[args.variants[0]])
    for variant, rows in results.items():
        seconds = [float(r["seconds"]) for r in rows]
        audio = float(rows[0]["audio"])
        each = " ".join(f"{s / audio:.4f}" for s in seconds)
        same = all(r["texts"] == reference for r in rows)
        print(
            f"{variant:<36} {each:<28} {statistics.median(seconds) / audio:7.4f} "
            f"{statistics.median(seconds) / base:8.3f} {statistics.median(r['faults_per_clip'] for r in rows):11.0f} "
            f"{max(float(r['peak_mib']) for r in rows):8.0f}" + ("" if same else "  TEXT DIFFERS")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
