"""Encode float32 mono audio to the speech endpoint's formats, incrementally.

Each `write` returns the bytes the encoder has finished so far, so a streamed response can send
them at once instead of encoding at the end. Everything is resampled to 24 kHz, the rate OpenAI's
speech output uses (and one that libopus accepts).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np

OUTPUT_RATE = 24000


@dataclass(frozen=True)
class OutputFormat:
    name: str
    media_type: str
    container: str | None  # None: raw PCM, no encoder
    codec: str | None
    bit_rate: int | None = None


OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "mp3": OutputFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", 64_000),
    "opus": OutputFormat("opus", "audio/opus", "ogg", "libopus", 32_000),
    "aac": OutputFormat("aac", "audio/aac", "adts", "aac", 64_000),
    "flac": OutputFormat("flac", "audio/flac", "flac", "flac"),
    "wav": OutputFormat("wav", "audio/wav", "wav", "pcm_s16le"),
    "pcm": OutputFormat("pcm", "audio/pcm", None, None),
}


class _Drain(io.RawIOBase):
    """A write-only, non-seekable sink: muxers write streamable layouts and we take bytes as they come."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


class AudioEncoder:
    """Feed float32 mono chunks at `input_rate`; receive encoded bytes of `fmt` as they are ready.

    With `seekable=True` the output goes to memory and is returned by `close()` whole, so containers
    that record their length in the header (wav, flac) carry the true length.
    """

    def __init__(self, fmt: str, input_rate: int, *, seekable: bool = False) -> None:
        self.format = OUTPUT_FORMATS[fmt]
        self.input_rate = input_rate
        self.samples_out = 0
        self._resampler = av.AudioResampler(
            format="s16" if self.format.container is None else None,
            layout="mono",
            rate=OUTPUT_RATE,
        )
        self._sink: _Drain | io.BytesIO | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream: av.audio.stream.AudioStream | None = None
        if self.format.container is not None:
            self._sink = io.BytesIO() if seekable else _Drain()
            # bitexact: no encoder-name tag, so a wav header is the plain 44 bytes clients often assume.
            options = {"fflags": "+bitexact"}
            if self.format.container == "ogg":
                # Ogg holds a page back until it spans 1 s by default; 100 ms pages let opus stream too.
                options["page_duration"] = "100000"
            self._container = av.open(self._sink, mode="w", format=self.format.container, options=options)
            stream = self._container.add_stream(self.format.codec, rate=OUTPUT_RATE, layout="mono")
            if self.format.bit_rate:
                stream.bit_rate = self.format.bit_rate
            self._stream = stream
            self._resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=OUTPUT_RATE)
        self._raw = bytearray()

    def _frames(self, samples: np.ndarray | None) -> list[av.AudioFrame]:
        if samples is None:
            return list(self._resampler.resample(None))
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout="mono"
        )
        frame.sample_rate = self.input_rate
        return list(self._resampler.resample(frame))

    def _encode(self, frames: list[av.AudioFrame], flush: bool) -> bytes:
        if self._container is None:  # raw pcm: the resampler already produced s16
            for frame in frames:
                data = frame.to_ndarray().astype("<i2").tobytes()
                self.samples_out += frame.samples
                self._raw += data
            out = bytes(self._raw)
            self._raw.clear()
            return out
        assert self._stream is not None
        for frame in frames:
            self.samples_out += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        if flush:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            if isinstance(self._sink, io.BytesIO):
                return self._sink.getvalue()
        return self._sink.take() if isinstance(self._sink, _Drain) else b""

    def write(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        return self._encode(self._frames(samples), flush=False)

    def close(self) -> bytes:
        return self._encode(self._frames(None), flush=True)

    @property
    def duration(self) -> float:
        return self.samples_out / OUTPUT_RATE


def encode_whole(samples: np.ndarray, input_rate: int, fmt: str) -> bytes:
    """The whole clip at once, with true lengths in wav and flac headers."""
    encoder = AudioEncoder(fmt, input_rate, seekable=True)
    head = encoder.write(samples)
    return head + encoder.close()
