"""What conversation sessions share, built once by the runtime: the chat backend and the spoken-reply
pipeline behind their responses, and the environment each new conversation is given."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from voxserve.engines.chat_backend import ChatBackend
from voxserve.engines.spoken_reply import SpokenReplies
from voxserve.realtime.conversation import ConversationEnv, ConversationSession
from voxserve.realtime.conversation_config import ConversationConfig, parse_conversation_update
from voxserve.realtime.protocol import Dialect
from voxserve.realtime.session_env import SessionEnv


@dataclass
class Conversations:
    chat: ChatBackend
    spoken: SpokenReplies
    env: ConversationEnv
    # The input side's environment for conversations: the user's turn is decoded once, whole, with the
    # chat pipeline's beam (live decodes would only take the cores the reply needs).
    session_env: SessionEnv

    def config(
        self, session: dict[str, Any] | None, model: str | None = None, *, param: str = "session"
    ) -> ConversationConfig:
        """A conversation's starting config: defaults, the `?model=` asked for, a key's session body."""
        config = ConversationConfig(model=model or "gpt-realtime")
        if session:
            body = {k: v for k, v in session.items() if k not in ("type", "client_secret")}
            config = parse_conversation_update(config, body, self.session_env.default_stt_model, param=param)
        return config

    def session(
        self, dialect: Dialect, config: ConversationConfig, client_secret: dict[str, Any] | None = None
    ) -> ConversationSession:
        return ConversationSession(
            dataclasses.replace(self.session_env), self.env, dialect, config=config, client_secret=client_secret
        )
