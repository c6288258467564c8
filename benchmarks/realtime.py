"""Realtime transcription benchmark: latency of turns, live deltas, how many sessions keep up, denoising.

Run under the exclusive CPU lock: `flock -x /tmp/vox-cpu.lock .venv/bin/python benchmarks/realtime.py`.

1. N sessions (N = 1, 2, ...) each stream the same dev-speech utterances (each <= 10 s, 1.5 s apart) at
   real time into a real server over WebSocket. Per utterance: `speech_stopped` -> `completed`, and
   `speech_started` -> first delta. A run keeps up when every `completed` came <= 1.5 s after its
   `speech_stopped`. CPU per session is the server's CPU seconds over the run, per session, per second.
2. Noise reduction (RNNoise) on clean and noisy (white noise, 10 dB SNR) speech: WER with it on and off,
   through the same session machine in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import server as start_server
from tests.realtime_tools import clip_pcm, clip_text, manifest

CLIPS = [
    "en_ls_test-other_3331-159605-0003",
    "en_ls_test-other_1688-142285-0007",
    "en_ls_test-other_2609-156975-0005",
    "en_ls_test-other_533-1066-0008",
]
GAP = 1.5
KEEP_UP = 1.5


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)] if values else float("nan")


async def _session(port: int, audio: np.ndarray, results: dict[str, list[float]]) -> None:
    import websockets

    url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
    async with websockets.connect(url, max_size=None) as ws:
        arrivals: dict[str, dict[str, float]] = {}

        async def reader() -> None:
            async for raw in ws:
                event = json.loads(raw)
                now = time.monotonic()
                item = event.get("item_id")
                if item is None:
                    continue
                marks = arrivals.setdefault(item, {})
                kind = event["type"].rsplit(".", 1)[-1]
                marks.setdefault(kind, now)

        task = asyncio.create_task(reader())
        step = 2400  # 100 ms
        started = time.monotonic()
        for index, offset in enumerate(range(0, len(audio), step)):
            chunk = base64.b64encode(audio[offset : offset + step].tobytes()).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.1 - time.monotonic()))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum("completed" in m for m in arrivals.values()) < len(CLIPS):
            await asyncio.sleep(0.1)
        task.cancel()
    for marks in arrivals.values():
        if "completed" in marks and "speech_stopped" in marks:
            results["final"].append(marks["completed"] - marks["speech_stopped"])
        if "delta" in marks and "speech_started" in marks:
            results["first_delta"].append(marks["delta"] - marks["speech_started"])
        results["turns"].append(1.0)
    results["missing"].append(float(len(CLIPS) - sum("completed" in m for m in arrivals.values())))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sessions_section(max_sessions: int) -> None:
    audio = [np.zeros(12000, np.int16)]
    for clip in CLIPS:
        audio += [clip_pcm(clip), np.zeros(int(GAP * 24000), np.int16)]
    stream = np.concatenate(audio)
    seconds = len(stream) / 24000
    print(f"\n## Sessions streaming at real time ({len(CLIPS)} utterances of 4-7 s, {seconds:.0f} s each)\n")
    print(
        "| sessions | speech_stopped -> completed median / p95 | first delta after speech start median / p95 "
        "| max completed lag | keeps up (<= 1.5 s) | server CPU per session |"
    )
    print("|---|---|---|---|---|---|")
    import tempfile

    log = Path(tempfile.mkdtemp()) / "server.log"
    with start_server("whisper-base", log) as (proc, port):
        for n in range(1, max_sessions + 1):
            results: dict[str, list[float]] = {"final": [], "first_delta": [], "turns": [], "missing": []}
            cpu_before, wall_before = _cpu_seconds(proc.pid), time.monotonic()

            async def run_all(n: int = n, results: dict[str, list[float]] = results) -> None:
                await asyncio.gather(*(_session(port, stream, results) for _ in range(n)))

            asyncio.run(run_all())
            cpu = (_cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - wall_before) / n
            final, first = results["final"], results["first_delta"]
            keeps = bool(final) and max(final) <= KEEP_UP and sum(results["missing"]) == 0
            print(
                f"| {n} | {statistics.median(final):.2f} / {_p95(final):.2f} s | "
                f"{statistics.median(first) if first else float('nan'):.2f} / {_p95(first):.2f} s | "
                f"{max(final):.2f} s | {'yes' if keeps else 'NO'} | {cpu * 100:.0f}% of a core |",
                flush=True,
            )
            if not keeps:
                break


def denoise_section(count: int) -> None:
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    from voxserve.realtime.transcription import TranscriptionSession
    from voxserve.runtime import Runtime

    normalize = EnglishTextNormalizer()
    runtime = Runtime.build()
    env = dataclasses.replace(runtime.realtime.env, live_deltas=False)
    ids = [k for k, v in manifest().items() if v["path"].startswith("en/") and v["duration_s"] <= 10][:count]
    rng = np.random.default_rng(7)

    def transcribe(pcm: np.ndarray, denoise: bool) -> str:
        session = TranscriptionSession(env)
        session.start()
        if denoise:
            update = {
                "type": "session.update",
                "session": {"audio": {"input": {"noise_reduction": {"type": "near_field"}}}},
            }
            session.receive(json.dumps(update))
        session.receive(
            json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
        )
        session.receive(
            json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm.tobytes()).decode()})
        )
        session.receive(json.dumps({"type": "input_audio_buffer.commit"}))
        texts = []
        while jobs := session.take_jobs():
            for job in jobs:
                with runtime.registry.lease(job.spec) as engine:
                    session.decoded(job, engine.start(job.audio, job.options).run_to_end())
        for event in session.take_events():
            if event["type"].endswith("transcription.completed"):
                texts.append(event["transcript"])
        return " ".join(texts)

    def rest(pcm: np.ndarray) -> str:
        # What POST /v1/audio/transcriptions does with the same audio: the whole clip, one decode.
        from voxserve.audio.resample import StreamResampler
        from voxserve.engines.whisper import TranscribeOptions

        audio = StreamResampler(24000, 16000).push(pcm)
        spec = runtime.stt.resolve("whisper-1")
        with runtime.registry.lease(spec) as engine:
            return engine.start(audio, TranscribeOptions(beam_size=runtime.settings.beam_size)).run_to_end().text

    rows = {}
    rest_refs: list[str] = []
    rest_hyps: list[str] = []
    for label, noisy in (("clean", False), ("noisy (white noise, 10 dB SNR)", True)):
        refs, plain, denoised = [], [], []
        for clip in ids:
            pcm = clip_pcm(clip).astype(np.float32)
            if noisy:
                noise = rng.standard_normal(len(pcm)) * np.sqrt(np.mean(pcm**2) / 10)
                pcm = pcm + noise
            pcm16 = np.clip(pcm, -32768, 32767).astype(np.int16)
            refs.append(normalize(clip_text(clip)))
            plain.append(normalize(transcribe(pcm16, False)))
            if not noisy:
                rest_refs.append(refs[-1])
                rest_hyps.append(normalize(rest(pcm16)))
            denoised.append(normalize(transcribe(pcm16, True)))
        rows[label] = (jiwer.wer(refs, plain), jiwer.wer(refs, denoised))
    print(f"\n## Noise reduction (RNNoise, near_field), WER on {len(ids)} dev-speech clips, whisper-base\n")
    print("| speech | WER without | WER with | change |")
    print("|---|---|---|---|")
    for label, (without, with_) in rows.items():
        print(f"| {label} | {without * 100:.2f}% | {with_ * 100:.2f}% | {(with_ - without) * 100:+.2f} points |")
    print(
        f"\nSame clean clips through one REST-style decode: {jiwer.wer(rest_refs, rest_hyps) * 100:.2f}% "
        f"(realtime session, manual commit: {rows['clean'][0] * 100:.2f}%)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--denoise-clips", type=int, default=12)
    parser.add_argument("--skip-denoise", action="store_true")
    args = parser.parse_args()
    print("# voxserve realtime benchmark (whisper-base, int8, 2 cores)")
    sessions_section(args.max_sessions)
    if not args.skip_denoise:
        denoise_section(args.denoise_clips)


if __name__ == "__main__":
    main()
