"""Decode any supported upload to 16 kHz mono float32 with PyAV.

The container is probed from the bytes (FFmpeg's format sniffing), never taken from the filename, so
an mp3 named `x.wav` still decodes and a text file named `x.mp3` is refused.
"""

from __future__ import annotations

from typing import BinaryIO

import av
import numpy as np

from voxserve.errors import InvalidAudio

SUPPORTED_INPUT_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
STT_SAMPLE_RATE = 16000


def _invalid(detail: str) -> InvalidAudio:
    return InvalidAudio(
        f"Invalid file format ({detail}). Supported formats: {list(SUPPORTED_INPUT_FORMATS)}",
        param="file",
    )


def decode_audio(source: BinaryIO, sample_rate: int = STT_SAMPLE_RATE) -> np.ndarray:
    """Decode the first audio stream of `source` to mono float32 at `sample_rate`.

    Raises InvalidAudio for empty, undecodable or truncated input, or input with no audio samples.
    """
    source.seek(0, 2)
    if source.tell() == 0:
        raise _invalid("the file is empty")
    source.seek(0)
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise _invalid("the data is not a recognised audio container") from exc
    try:
        if not container.streams.audio:
            raise _invalid("the file has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        pieces: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # resampling from a gap in timestamps would insert silence
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().reshape(-1))
        except (av.FFmpegError, ValueError, EOFError) as exc:
            if not pieces:
                raise _invalid("the audio data could not be decoded") from exc
            # A damaged tail after good audio: keep what decoded, as FFmpeg-based tools do.
    finally:
        container.close()
    if not pieces:
        raise _invalid("the file contains no audio samples")
    audio = np.concatenate(pieces).astype(np.float32, copy=False)
    if audio.size < sample_rate // 100:
        raise _invalid("the audio is shorter than 10 ms")
    return audio
