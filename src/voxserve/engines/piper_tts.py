"""Text to speech with Piper voices (onnxruntime), one sentence at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from piper import PiperVoice

from voxserve.audio.tempo import change_tempo


@dataclass(frozen=True)
class VoiceFiles:
    name: str
    model: Path
    config: Path

    @property
    def sample_rate(self) -> int:
        return int(json.loads(self.config.read_text())["audio"]["sample_rate"])


def find_voices(directory: Path) -> list[VoiceFiles]:
    """Every `<name>.onnx` with its `<name>.onnx.json` in `directory` (not recursive)."""
    if not directory.is_dir():
        return []
    return [
        VoiceFiles(model.name[: -len(".onnx")], model, model.with_name(model.name + ".json"))
        for model in sorted(directory.glob("*.onnx"))
        if model.with_name(model.name + ".json").is_file()
    ]


class PiperEngine:
    def __init__(self, voice: PiperVoice, name: str) -> None:
        self.voice = voice
        self.name = name
        self.sample_rate = int(voice.config.sample_rate)

    @classmethod
    def load(cls, files: VoiceFiles) -> PiperEngine:
        return cls(PiperVoice.load(files.model, files.config), files.name)

    def sentences(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Float32 mono audio at `sample_rate`, one array per sentence, each as soon as it is spoken.

        Speed is applied by time-stretching each sentence (pitch kept); see `audio.tempo` for why
        not Piper's length scale.
        """
        for chunk in self.voice.synthesize(text):
            if chunk.audio_float_array.size:
                yield change_tempo(chunk.audio_float_array, self.sample_rate, speed)
