"""Text to speech with Piper voices (onnxruntime), one sentence at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig

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
    def load(cls, files: VoiceFiles, threads: int = 0) -> PiperEngine:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice, every physical core
        options.inter_op_num_threads = 1
        # Spinning worker threads starve everything else on a small machine: the event loop, a second
        # synthesis, the client. Measured here: two concurrent syntheses went from 0.81x the throughput
        # of one to 1.07x, for 10% on a lone synthesis.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(
            str(files.model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        config = PiperConfig.from_dict(json.loads(files.config.read_text(encoding="utf-8")))
        return cls(PiperVoice(session=session, config=config), files.name)

    def sentences(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Float32 mono audio at `sample_rate`, one array per sentence, each as soon as it is spoken.

        Speed is applied by time-stretching each sentence (pitch kept); see `audio.tempo` for why
        not Piper's length scale.
        """
        for chunk in self.voice.synthesize(text):
            if chunk.audio_float_array.size:
                yield change_tempo(chunk.audio_float_array, self.sample_rate, speed)
