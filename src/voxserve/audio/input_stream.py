"""A realtime session's input audio: raw appended bytes in, 16 kHz mono float32 for VAD and Whisper out."""

from __future__ import annotations

import numpy as np

from voxserve.audio.decode import STT_SAMPLE_RATE
from voxserve.audio.denoise import ADAPTIVE_MIX, NoiseMix, StreamingDenoiser
from voxserve.audio.g711 import G711_SAMPLE_RATE, decode_g711
from voxserve.audio.resample import StreamResampler

PCM16_RATE = 24000  # the only rate the Realtime API's audio/pcm takes
INPUT_FORMATS = ("pcm16", "g711_ulaw", "g711_alaw")


def bytes_per_second(fmt: str) -> int:
    return PCM16_RATE * 2 if fmt == "pcm16" else G711_SAMPLE_RATE


class InputAudioStream:
    """Converts one session's appends in order; state (a split sample, filter memory) spans appends."""

    def __init__(self, fmt: str = "pcm16", denoise: bool = False, denoise_mix: NoiseMix | None = ADAPTIVE_MIX) -> None:
        if fmt not in INPUT_FORMATS:
            raise ValueError(f"unknown input format {fmt!r}")
        self.format = fmt
        self._odd = b""  # PCM16: a trailing byte whose sample's other half comes with the next append
        rate = PCM16_RATE if fmt == "pcm16" else G711_SAMPLE_RATE
        self._resampler = StreamResampler(rate, STT_SAMPLE_RATE)
        self._denoiser = StreamingDenoiser(STT_SAMPLE_RATE, denoise_mix) if denoise else None

    @property
    def denoising(self) -> bool:
        return self._denoiser is not None

    def push(self, data: bytes) -> np.ndarray:
        if self.format == "pcm16":
            data = self._odd + data
            whole = len(data) - len(data) % 2
            self._odd = data[whole:]
            samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.int16, copy=False)
        else:
            samples = decode_g711(data, "ulaw" if self.format == "g711_ulaw" else "alaw")
        audio = self._resampler.push(samples)
        if self._denoiser is not None:
            audio = self._denoiser.push(audio)
        return audio

    def flush(self) -> np.ndarray:
        """The audio the denoiser still holds (its ~20 ms lag), for a commit; none without denoising."""
        if self._denoiser is None:
            return np.zeros(0, dtype=np.float32)
        return self._denoiser.flush()

    def close(self) -> None:
        if self._denoiser is not None:
            self._denoiser.close()
