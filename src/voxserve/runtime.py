"""The composition root: every engine built once from settings, for the server, the CLI and the benchmarks.

Nothing here knows about HTTP. The server keeps one Runtime per app; the CLI and the benchmarks build
their own and drive the same engines in-process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass

from voxserve import process_memory
from voxserve.config import Settings
from voxserve.engines.admission import EngineGate
from voxserve.engines.catalog import add_chat_models, add_realtime_model, build_registry, build_voices
from voxserve.engines.events import AudioListener, ModelListener
from voxserve.engines.llama_chat import EmbeddedChat, Sampling
from voxserve.engines.registry import ModelRegistry
from voxserve.engines.speech_to_text import SpeechToText
from voxserve.engines.spoken_answers import SpokenAnswers
from voxserve.engines.spoken_reply import SpokenReplies
from voxserve.engines.text_to_speech import TextToSpeech
from voxserve.engines.upstream_chat import UpstreamChat
from voxserve.engines.voice_chat import VoiceChat
from voxserve.realtime.conversation import ConversationEnv
from voxserve.realtime.conversations import Conversations
from voxserve.realtime.hub import RealtimeHub
from voxserve.realtime.session_env import SessionEnv

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    registry: ModelRegistry
    stt: SpeechToText
    tts: TextToSpeech
    chat: EmbeddedChat | UpstreamChat
    chat_gate: EngineGate
    voice_chat: VoiceChat
    realtime: RealtimeHub
    spoken: SpokenReplies  # the spoken-reply pipeline, for chat completions and realtime conversations

    @classmethod
    def build(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or Settings()
        if settings.malloc_tuning:
            # Before any engine loads or starts a thread: the heaps they create follow these settings.
            process_memory.tune()
        registry = build_registry(settings)
        if settings.malloc_tuning:
            # A load leaves its file buffers free in the heap, an unload the model's memory: give both back.
            registry.listeners.append(lambda _: process_memory.release())
        voices = build_voices(settings, registry)
        add_chat_models(settings, registry)
        add_realtime_model(settings, registry)
        stt_gate = EngineGate("speech-to-text", settings.stt_concurrency, settings.stt_queue)
        tts_gate = EngineGate("text-to-speech", settings.tts_concurrency, settings.tts_queue)
        # llama.cpp contexts are not thread-safe: one generation at a time, the rest queue.
        chat_gate = EngineGate("chat", 1, settings.chat_queue)
        chat: EmbeddedChat | UpstreamChat
        if settings.chat_upstream_url:
            chat = UpstreamChat(
                settings.chat_upstream_url,
                api_key=settings.chat_upstream_api_key,
                model_map=settings.chat_upstream_model_map,
                default_model=settings.chat_upstream_model,
                timeout=settings.chat_upstream_timeout,
                connect_timeout=settings.chat_upstream_connect_timeout,
            )
        else:
            chat = EmbeddedChat(registry, chat_gate, Sampling.from_settings(settings))
        stt = SpeechToText(registry, stt_gate, settings.max_audio_seconds)
        tts = TextToSpeech(registry, tts_gate, voices)
        answers = SpokenAnswers(ttl=settings.audio_answer_ttl, max_entries=settings.audio_answer_max)
        voice_chat = VoiceChat(stt, tts, answers, settings.default_stt_model, settings.chat_stt_beam_size)
        realtime = build_realtime(settings, stt)
        spoken = SpokenReplies(tts, settings.voice_instructions)
        realtime.conversations = build_conversations(settings, realtime, chat, spoken, tts)
        return cls(settings, registry, stt, tts, chat, chat_gate, voice_chat, realtime, spoken)

    @property
    def gates(self) -> list[EngineGate]:
        return [self.stt.gate, self.tts.gate, self.chat_gate]

    def observe(self, on_model: ModelListener, on_audio: AudioListener) -> None:
        """Connect a watcher (the server's metrics) to model loads and unloads and to finished audio work."""
        self.registry.listeners.append(on_model)
        self.stt.listeners.append(on_audio)
        self.tts.listeners.append(on_audio)

    async def preload(self) -> None:
        for model_id in self.settings.preload:
            log.info("preloading %s", model_id)
            await asyncio.to_thread(self.registry.preload, model_id)

    async def sweep_idle_models(self) -> None:
        """Unload idle models for as long as it runs (a background task of the server)."""
        ttl = self.settings.model_ttl
        if ttl < 0:
            return
        interval = max(1.0, min(30.0, ttl / 4))
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.registry.sweep)

    async def aclose(self) -> None:
        for gate in self.gates:
            gate.shutdown()
        self.realtime.shutdown()
        if isinstance(self.chat, UpstreamChat):
            await self.chat.close()


def build_realtime(settings: Settings, stt: SpeechToText) -> RealtimeHub:
    # Sessions name their default transcription model by its OpenAI alias when there is one, so a
    # beta client's strict types (which list only OpenAI's names) accept the session object.
    default_model = "whisper-1" if "whisper-1" in settings.stt_aliases else settings.default_stt_model
    env = SessionEnv(
        resolve_stt=stt.resolve,
        default_stt_model=default_model,
        beam_size=settings.beam_size,
        partial_beam_size=settings.realtime_partial_beam_size,
        max_audio_seconds=settings.max_audio_seconds,
        session_seconds=settings.realtime_session_seconds,
        live_deltas=settings.realtime_live_deltas,
        partial_interval_ms=settings.realtime_partial_interval_ms,
        **({"live_sure_agreement": 2, "live_unsure_probability": 0.3} if settings.realtime_live_confidence else {}),
        final_trimmed_only=not settings.realtime_final_full_window,
    )
    return RealtimeHub(stt, env, max_sessions=settings.realtime_max_sessions, key_secret=settings.realtime_key_secret)


def build_conversations(
    settings: Settings, hub: RealtimeHub, chat: EmbeddedChat | UpstreamChat, spoken: SpokenReplies, tts: TextToSpeech
) -> Conversations:
    env = ConversationEnv(
        resolve_voice=tts.voices.resolve,
        default_instructions=spoken.instructions,
        chat_model=settings.default_chat_model,
        max_tokens=settings.chat_max_tokens,
        context_tokens=settings.realtime_history_tokens or settings.chat_context,
    )
    session_env = dataclasses.replace(hub.env, live_deltas=False, beam_size=settings.chat_stt_beam_size)
    return Conversations(chat, spoken, env, session_env)
