"""Ephemeral client keys (`ek_…`): stateless tokens signed with the server's secret.

A key carries its expiry and the session it was minted with, compressed, and an HMAC-SHA256 over
both; nothing is stored, so every replica given the same secret accepts every other's keys, and a
restart with a generated secret invalidates them all. The size is capped so a key fits in an HTTP
header line (and a browser's `Sec-WebSocket-Protocol`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass
from typing import Any

PREFIX = "ek_"
MAX_KEY_CHARS = 6000


class KeyTooLarge(ValueError):
    """The session config does not fit in a key."""


@dataclass(frozen=True)
class EphemeralKey:
    value: str
    expires_at: int
    kind: str  # "transcription" or "realtime"
    session: dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyMinter:
    def __init__(self, secret: str | bytes) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else secret

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def mint(self, kind: str, session: dict[str, Any], expires_at: int) -> EphemeralKey:
        payload = json.dumps({"v": 1, "exp": expires_at, "kind": kind, "session": session}, separators=(",", ":"))
        body = _b64(zlib.compress(payload.encode(), 9))
        value = f"{PREFIX}{body}.{self._sign(body)}"
        if len(value) > MAX_KEY_CHARS:
            raise KeyTooLarge(f"the session config makes a key of {len(value)} characters (at most {MAX_KEY_CHARS})")
        return EphemeralKey(value, expires_at, kind, session)

    def verify(self, value: str, now: float) -> EphemeralKey | None:
        """The key's contents if the signature is ours and it has not expired; otherwise None."""
        if not value.startswith(PREFIX) or len(value) > MAX_KEY_CHARS:
            return None
        body, _, signature = value[len(PREFIX) :].partition(".")
        if not body or not hmac.compare_digest(signature, self._sign(body)):
            return None
        try:
            payload = json.loads(zlib.decompress(_unb64(body)))
        except (ValueError, zlib.error):
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] <= now:
            return None
        return EphemeralKey(value, payload["exp"], str(payload.get("kind")), dict(payload.get("session") or {}))


def looks_ephemeral(token: str) -> bool:
    return token.startswith(PREFIX)
