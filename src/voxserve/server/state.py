"""What the routes share: settings and the engines, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from voxserve.config import Settings
from voxserve.engines.admission import EngineGate
from voxserve.engines.llama_chat import EmbeddedChat
from voxserve.engines.registry import ModelRegistry
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.text_to_speech import TextToSpeech
from voxserve.engines.upstream_chat import UpstreamChat
from voxserve.engines.voice_chat import VoiceChat


@dataclass
class AppState:
    settings: Settings
    registry: ModelRegistry
    stt: SpeechToText
    tts: TextToSpeech
    chat: EmbeddedChat | UpstreamChat
    chat_gate: EngineGate
    voice_chat: VoiceChat


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.vox
    return state
