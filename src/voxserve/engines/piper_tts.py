"""Text to speech with Piper voices (onnxruntime), one sentence at a time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig

from voxserve.audio.tempo import change_tempo
from voxserve.engines.isolated_phonemizer import PHONEMIZER, IsolatedPhonemizer


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


class _ArenaShrinkingSession:
    """An onnxruntime session whose memory arena gives back, after each run, what that run grew it by.

    The decoder's intermediate tensors grow with the audio (~150 MiB for a 128-character sentence), and
    onnxruntime's arena keeps its peak for good: measured beside Whisper and llama.cpp, it held ~200 MiB
    between requests, on top of which the next transcription's own buffers set the process's peak. The
    arena is still used within a run (turning it off makes a sentence ~2x slower: every large tensor a
    fresh mapping); shrinking costs ~10% of a synthesis, measured on 62- and 128-character sentences.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._run_options = onnxruntime.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, outputs: list[str] | None, feeds: dict[str, Any], run_options: Any = None) -> list[Any]:
        return self._session.run(outputs, feeds, run_options or self._run_options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class PiperEngine:
    def __init__(
        self, voice: PiperVoice, name: str, config_path: Path, phonemizer: IsolatedPhonemizer = PHONEMIZER
    ) -> None:
        self.voice = voice
        self.name = name
        self.sample_rate = int(voice.config.sample_rate)
        self.config_path = config_path
        self.phonemizer = phonemizer

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
        PHONEMIZER.start()
        voice = PiperVoice(session=session, config=config)
        voice.session = _ArenaShrinkingSession(session)  # type: ignore[assignment]
        return cls(voice, files.name, files.config)

    def phonemize(self, text: str) -> list[list[str]]:
        """Phonemes per sentence, from the isolated phonemizer (raises PhonemizeFailed, a 400)."""
        return self.phonemizer.phonemize(str(self.config_path), text)

    def speak(self, phonemes: list[str], speed: float = 1.0) -> np.ndarray:
        """One sentence's phonemes as float32 mono audio at `sample_rate` (what `PiperVoice.synthesize`
        does per sentence: ids, the model, peak normalisation), time-stretched to `speed`.

        Speed is applied by time-stretching (pitch kept); see `audio.tempo` for why not Piper's
        length scale.
        """
        if not phonemes:
            return np.zeros(0, dtype=np.float32)
        audio = self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(phonemes))
        if isinstance(audio, tuple):  # (audio, alignments) from a voice patched for alignments
            audio = audio[0]
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
        audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
        return change_tempo(audio, self.sample_rate, speed) if audio.size else audio

    def sentences(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """Float32 mono audio at `sample_rate`, one array per sentence, each as soon as it is spoken."""
        for phonemes in self.phonemize(text):
            audio = self.speak(phonemes, speed)
            if audio.size:
                yield audio
