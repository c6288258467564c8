"""SRT and WebVTT writers, following the layout of Whisper's own writers."""

from __future__ import annotations

from collections.abc import Iterable

from voxserve.transcript import Segment


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _cue_text(segment: Segment) -> str:
    # "-->" inside a cue would end it early in both formats.
    return segment.text.strip().replace("-->", "->")


def to_srt(segments: Iterable[Segment]) -> str:
    cues = []
    for index, segment in enumerate((s for s in segments if s.text.strip()), start=1):
        start = format_timestamp(segment.start, ",")
        end = format_timestamp(segment.end, ",")
        cues.append(f"{index}\n{start} --> {end}\n{_cue_text(segment)}\n")
    return "\n".join(cues) + ("\n" if cues else "")


def to_vtt(segments: Iterable[Segment]) -> str:
    cues = []
    for segment in segments:
        if not segment.text.strip():
            continue
        start = format_timestamp(segment.start, ".")
        end = format_timestamp(segment.end, ".")
        cues.append(f"{start} --> {end}\n{_cue_text(segment)}\n")
    return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else "")
