"""Decode any supported upload to 16 kHz mono float32 with PyAV.

The container is probed from the bytes (FFmpeg's format sniffing), never taken from the filename, so
an mp3 named `x.wav` still decodes and a text file named `x.mp3` is refused.

Decoding is bounded by duration, not by the size of the upload: a few hundred kilobytes of 100 Hz WAV
or FLAC-compressed silence can hold hours, and the decoded samples (64 KB per second at 16 kHz) are
what costs memory. Decoding stops as soon as the output passes `max_seconds`.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

import av
import numpy as np

from voxserve.errors import InvalidAudio, InvalidRequest

log = logging.getLogger(__name__)

SUPPORTED_INPUT_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
STT_SAMPLE_RATE = 16000


def _invalid(detail: str) -> InvalidAudio:
    return InvalidAudio(
        f"Invalid file format ({detail}). Supported formats: {list(SUPPORTED_INPUT_FORMATS)}",
        param="file",
    )


class AudioTooLong(InvalidRequest):
    """More audio than the server's limit (`max_audio_seconds`)."""

    def __init__(self, limit: float) -> None:
        super().__init__(
            f"The audio is longer than {limit:g} seconds, the longest this server accepts "
            "(its VOXSERVE_MAX_AUDIO_SECONDS setting). Split it into shorter files.",
            param="file",
            code="audio_too_long",
        )


class _Samples:
    """Decoded pieces, refused once they add up to more than `limit` samples."""

    def __init__(self, limit: int | None, seconds: float | None) -> None:
        self.limit = limit
        self.seconds = seconds
        self.pieces: list[np.ndarray] = []
        self.count = 0

    def add(self, frame: av.AudioFrame) -> None:
        piece = frame.to_ndarray().reshape(-1)
        self.count += piece.size
        if self.limit is not None and self.count > self.limit:
            self.pieces.clear()  # free them now, not when the error has been answered
            assert self.seconds is not None
            raise AudioTooLong(self.seconds)
        self.pieces.append(piece)


def decode_audio(
    source: BinaryIO, sample_rate: int = STT_SAMPLE_RATE, *, max_seconds: float | None = None
) -> np.ndarray:
    """Decode the first audio stream of `source` to mono float32 at `sample_rate`.

    Raises InvalidAudio for empty or undecodable input, or input with no audio samples, and
    AudioTooLong past `max_seconds`. Input cut short (a recording that stopped mid-way, a partial
    download) decodes up to where its audio ends, as FFmpeg-based tools do; so do files with a damaged
    packet in the middle, which is skipped.
    """
    source.seek(0, 2)
    if source.tell() == 0:
        raise _invalid("the file is empty")
    source.seek(0)
    limit = None if max_seconds is None else int(max_seconds * sample_rate)
    samples = _Samples(limit, max_seconds)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError, EOFError) as exc:
        raise _invalid("the data is not a recognised audio container") from exc
    damaged = 0
    try:
        if not container.streams.audio:
            raise _invalid("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except (av.FFmpegError, ValueError) as exc:
                    damaged += 1
                    if not samples.count and damaged > 8:
                        raise _invalid("the audio data could not be decoded") from exc
                    continue  # one bad packet: skip it, as FFmpeg does
                for frame in frames:
                    frame.pts = None  # resampling from a gap in timestamps would insert silence
                    for out in resampler.resample(frame):
                        samples.add(out)
            for out in resampler.resample(None):
                samples.add(out)
        except (av.FFmpegError, ValueError, EOFError) as exc:
            if not samples.count:
                raise _invalid("the audio data could not be decoded") from exc
            # The container ends mid-way (a truncated file): keep what decoded.
    finally:
        container.close()
    if damaged:
        log.info("decoded %.1f s of audio; skipped %d damaged packet(s)", samples.count / sample_rate, damaged)
    if not samples.pieces:
        raise _invalid("the file contains no audio samples")
    audio = np.concatenate(samples.pieces).astype(np.float32, copy=False)
    samples.pieces.clear()
    if audio.size < sample_rate // 100:
        raise _invalid("the audio is shorter than 10 ms")
    return audio
