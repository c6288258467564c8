"""First live delta of realtime turns, in-process on a simulated clock: one session as a server runs it.

The session streams the sessions section's utterances (benchmarks/realtime.py: dev-speech clips of
3-10 s, 1.5 s apart) in 100 ms appends, each arriving at its time on a virtual clock; a decode the
session asks for starts when it asks (or when its previous decode ends: a session has one decode out
at a time, as on the server) and takes the time it really took here, during which more audio arrives.
So the figures are the server's for one session, without streaming in real time (the run takes only
the decodes' time) and without another process on the cores. Run under the exclusive CPU lock.

    .venv/bin/python benchmarks/live_latency.py --clips 16 [--set partial_min_ms=400 ...]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.realtime import GAP, session_clips, timed_decode
from tests.realtime_tools import clip_pcm

STEP = 2400  # 100 ms of 24 kHz audio per append


@dataclasses.dataclass
class Timeline:
    first_delta: list[float] = dataclasses.field(default_factory=list)  # s after speech_started, per turn
    final_lag: list[float] = dataclasses.field(default_factory=list)  # speech_stopped -> completed
    partial_seconds: float = 0.0
    partials: int = 0
    transcripts: list[str] = dataclasses.field(default_factory=list)


def simulate(runtime: object, env: object, audio: np.ndarray, verbose: bool = False) -> Timeline:
    from voxserve.realtime.transcription import TranscriptionSession

    session = TranscriptionSession(env)  # type: ignore[arg-type]
    session.start()
    out = Timeline()
    marks: dict[str, dict[str, float]] = {}
    pending = None  # (job, result, ends_at)

    def handle(now: float) -> None:
        for event in session.take_events():
            item = event.get("item_id")
            if item is None:
                continue
            kind = event["type"].rsplit(".", 1)[-1]
            marks.setdefault(item, {}).setdefault(kind, now)
            if kind == "completed":
                out.transcripts.append(event["transcript"])
            if verbose and kind in ("speech_started", "speech_stopped", "delta", "completed"):
                print(f"  {now:7.2f} {kind:15s} {event.get('delta', event.get('transcript', ''))!r}")

    def run_next(now: float) -> None:
        nonlocal pending
        jobs = session.take_jobs()
        if not jobs:
            pending = None
            return
        (job,) = jobs
        result, seconds = timed_decode(runtime, job)
        if job.kind == "partial":
            out.partial_seconds += seconds
            out.partials += 1
        if verbose:
            print(f"  {now:7.2f} {job.kind:8s} {job.audio.size / 16000:5.2f} s audio, {seconds:.2f} s: {result.text!r}")
        pending = (job, result, now + seconds)

    for index, offset in enumerate(range(0, len(audio), STEP)):
        arrives = index * STEP / 24000
        while pending is not None and pending[2] <= arrives:
            job, result, ends = pending
            session.decoded(job, result)
            handle(ends)
            run_next(ends)
        chunk = base64.b64encode(audio[offset : offset + STEP].tobytes()).decode()
        session.receive(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        handle(arrives)
        if pending is None:
            run_next(arrives)
    while pending is not None:
        job, result, ends = pending
        session.decoded(job, result)
        handle(ends)
        run_next(ends)
    for m in marks.values():
        if "delta" in m and "speech_started" in m:
            out.first_delta.append(m["delta"] - m["speech_started"])
        if "completed" in m and "speech_stopped" in m:
            out.final_lag.append(m["completed"] - m["speech_stopped"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--set", action="append", default=[], help="SessionEnv field=value (Python literal)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    import ast

    from voxserve.runtime import Runtime

    runtime = Runtime.build()
    changes = {k: ast.literal_eval(v) for k, v in (s.split("=", 1) for s in args.set)}
    env = dataclasses.replace(runtime.realtime.env, **changes)  # type: ignore[arg-type]
    pieces = [np.zeros(12000, np.int16)]
    clips = session_clips(args.clips)
    for clip in clips:
        pieces += [clip_pcm(clip), np.zeros(int(GAP * 24000), np.int16)]
    audio = np.concatenate(pieces)
    # One untimed decode first: the model's first run pays for its buffers.
    simulate(runtime, env, audio[: 24000 * 4])
    t = simulate(runtime, env, audio, args.verbose)
    first = sorted(t.first_delta) or [float("nan")]
    t.final_lag = t.final_lag or [float("nan")]
    print(
        f"{changes or 'defaults'}: first delta median {statistics.median(first):.2f} s "
        f"(p95 {first[max(0, round(0.95 * len(first)) - 1)]:.2f}, {len(first)} turns); "
        f"completed lag median {statistics.median(t.final_lag):.2f} max {max(t.final_lag):.2f} s; "
        f"{t.partials} live decodes, {t.partial_seconds:.1f} s"
    )
    print("  first deltas: " + ", ".join(f"{v:.2f}" for v in first))
    import jiwer
    from tests.realtime_tools import clip_text
    from whisper_normalizer.english import EnglishTextNormalizer

    normalize = EnglishTextNormalizer()
    ref = normalize(" ".join(clip_text(c) for c in clips))
    hyp = normalize(" ".join(t.transcripts))
    out = jiwer.process_words(ref, hyp)
    errors = out.substitutions + out.deletions + out.insertions
    print(f"  WER {out.wer * 100:.2f}% ({errors} errors in {len(ref.split())} words)")


if __name__ == "__main__":
    main()
