"""G.711 µ-law and A-law (8 kHz telephone audio) to and from 16-bit PCM, with FFmpeg's codecs via PyAV."""

from __future__ import annotations

import av
import numpy as np

G711_SAMPLE_RATE = 8000
_CODECS = {"ulaw": "pcm_mulaw", "alaw": "pcm_alaw"}


def _codec(law: str) -> str:
    try:
        return _CODECS[law]
    except KeyError:
        raise ValueError(f"unknown G.711 law {law!r}: use 'ulaw' or 'alaw'") from None


def decode_g711(data: bytes, law: str) -> np.ndarray:
    """One byte per sample in, int16 samples at 8 kHz out. G.711 has no frames, so any length decodes."""
    if not data:
        return np.zeros(0, dtype=np.int16)
    decoder = av.CodecContext.create(_codec(law), "r")
    decoder.sample_rate = G711_SAMPLE_RATE
    decoder.layout = "mono"
    frames = decoder.decode(av.Packet(data))
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.int16, copy=False)


def encode_g711(samples: np.ndarray, law: str) -> bytes:
    """int16 samples at 8 kHz to G.711 bytes (one per sample)."""
    if samples.size == 0:
        return b""
    encoder = av.CodecContext.create(_codec(law), "w")
    encoder.sample_rate = G711_SAMPLE_RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = G711_SAMPLE_RATE
    return b"".join(bytes(p) for p in [*encoder.encode(frame), *encoder.encode(None)])
