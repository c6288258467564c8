"""What the routes share: settings and the engines, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from voxserve.config import Settings
from voxserve.engines.registry import ModelRegistry
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.text_to_speech import TextToSpeech


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    stt: SpeechToText
    tts: TextToSpeech


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.vox
    return state
