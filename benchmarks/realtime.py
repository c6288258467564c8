"""Realtime transcription benchmark: latency of turns, live deltas, how many sessions keep up, denoising.

Run under the exclusive CPU lock: `flock -x /tmp/vox-cpu.lock .venv/bin/python benchmarks/realtime.py`.

1. N sessions (N = 1, 2, ...) each stream the same dev-speech utterances (each <= 10 s, 1.5 s apart) at
   real time into a real server over WebSocket. Per utterance: `speech_stopped` -> `completed`, and
   `speech_started` -> first delta. A run keeps up when every `completed` came <= 1.5 s after its
   `speech_stopped`. CPU per session is the server's CPU seconds over the run, per session, per second.
2. Noise reduction (RNNoise) on clean and noisy (white noise, 10 dB SNR) speech: WER with it on and off,
   through the same session machine in-process.
3. Conversations (`?model=gpt-realtime`, default models): spoken questions (espeak-ng) streamed at real
   time under server VAD; from the end of the user's speech to the first `response.output_audio.delta`,
   with its breakdown (VAD end: `speech_stopped`; STT: the turn's transcript; LLM first token: the first
   transcript delta; first speech piece: the first audio delta). Target: <= silence_duration_ms + 1.0 s,
   and within 1.5x of that with two conversations at once.
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


SILENCE_MS = 500  # server VAD's default silence_duration_ms
CONVERSATION_PRELOAD = "whisper-base,qwen2.5-coder-0.5b,voice:en_US-joe-medium"


async def _conversation(port: int, questions: list[np.ndarray], rows: list[dict[str, float]]) -> None:
    """One conversation: each question streamed at real time in 20 ms appends, then silence until the
    answer's first audio (and its end) arrive; the next question follows."""
    import websockets

    url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime",
            "audio": {"input": {"transcription": {"model": "whisper-1"},
                                "turn_detection": {"type": "server_vad", "silence_duration_ms": SILENCE_MS}}},
        }}))  # fmt: skip
        marks: dict[str, float] = {}
        done = asyncio.Event()

        async def reader() -> None:
            async for raw in ws:
                event = json.loads(raw)
                kind, now = event["type"], time.monotonic()
                key = {
                    "input_audio_buffer.speech_stopped": "vad",
                    "conversation.item.input_audio_transcription.completed": "stt",
                    "response.output_audio_transcript.delta": "llm",
                    "response.output_audio.delta": "audio",
                }.get(kind)
                if key is not None and key not in marks:
                    marks[key] = now
                if kind == "response.done":
                    done.set()
                if kind == "error":
                    print("error event:", event["error"], file=sys.stderr)

        task = asyncio.create_task(reader())
        step = 480  # 20 ms at 24 kHz
        for speech in questions:
            marks.clear()
            done.clear()
            audio = np.concatenate([np.zeros(12000, np.int16), speech])
            started = time.monotonic()
            for index, offset in enumerate(range(0, len(audio), step)):
                chunk = audio[offset : offset + step].tobytes()
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})
                )
                await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - time.monotonic()))
            speech_end = started + len(audio) / 24000
            silence = np.zeros(step, np.int16).tobytes()
            index = 0
            while not done.is_set():  # silence at real time, as a microphone would send
                await ws.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(silence).decode()})
                )
                index += 1
                await asyncio.sleep(max(0.0, speech_end + index * 0.02 - time.monotonic()))
                if time.monotonic() - speech_end > 120:
                    raise RuntimeError("no answer in 120 s")
            if "audio" in marks:
                rows.append({key: marks[key] - speech_end for key in marks})
            await asyncio.sleep(1.0)
        task.cancel()


def conversation_section(count: int) -> None:
    from tests.chat_tools import questions
    from tests.realtime_conversation_tools import espeak_pcm

    spoken = []
    for question in questions()[:count]:
        pcm = espeak_pcm(question.question)
        voiced = np.flatnonzero(np.abs(pcm) > 300)  # espeak pads its speech with silence: trim it
        spoken.append(pcm[voiced[0] : voiced[-1] + 1])
    target = SILENCE_MS / 1000 + 1.0
    print(f"\n## Conversations: end of speech -> first answer audio ({count} spoken questions, espeak-ng)\n")
    print(f"Default models (whisper-base, qwen2.5-coder-0.5b, Piper joe-medium); server VAD silence {SILENCE_MS} ms; "
          f"target <= {target:.1f} s (1.5x = {target * 1.5:.2f} s with two conversations).\n")  # fmt: skip
    print("| conversations | first audio median / p95 / max | VAD end | STT | LLM first token | first speech piece "
          "| within target |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    import tempfile

    log = Path(tempfile.mkdtemp()) / "server.log"
    with start_server(CONVERSATION_PRELOAD, log) as (_, port):
        # A first answer loads nothing (all preloaded) but warms the caches; it is not counted.
        asyncio.run(_conversation(port, spoken[:1], []))
        for n in (1, 2):
            rows: list[dict[str, float]] = []

            async def run_all(n: int = n, rows: list[dict[str, float]] = rows) -> None:
                await asyncio.gather(*(_conversation(port, spoken, rows) for _ in range(n)))

            asyncio.run(run_all())
            firsts = [r["audio"] for r in rows]

            def median(key: str, base: str | None, rows: list[dict[str, float]] = rows) -> float:
                values = [r[key] - (r[base] if base else 0.0) for r in rows if key in r and (base is None or base in r)]
                return statistics.median(values) if values else float("nan")

            limit = target if n == 1 else target * 1.5
            ok = statistics.median(firsts) <= limit
            print(
                f"| {n} | {statistics.median(firsts):.2f} / {_p95(firsts):.2f} / {max(firsts):.2f} s "
                f"| {median('vad', None):.2f} s | {median('stt', 'vad'):.2f} s | {median('llm', 'stt'):.2f} s "
                f"| {median('audio', 'llm'):.2f} s | {'yes' if ok else 'NO'} (median <= {limit:.2f} s) |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--denoise-clips", type=int, default=12)
    parser.add_argument("--skip-denoise", action="store_true")
    parser.add_argument("--conversation-questions", type=int, default=6)
    parser.add_argument("--only-conversations", action="store_true")
    args = parser.parse_args()
    print("# voxserve realtime benchmark (whisper-base, int8, 2 cores)")
    if not args.only_conversations:
        sessions_section(args.max_sessions)
        if not args.skip_denoise:
            denoise_section(args.denoise_clips)
    conversation_section(args.conversation_questions)


if __name__ == "__main__":
    main()
