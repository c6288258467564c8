"""A conversation's items as chat messages for the chat backend, and the bound that keeps them inside
the model's context: the oldest turns go first, never the instructions."""

from __future__ import annotations

from typing import Any

# A cautious estimate: English runs about four characters a token; three leaves room for other text.
CHARS_PER_TOKEN = 3
TOKENS_PER_MESSAGE = 8


def item_text(item: dict[str, Any]) -> str:
    """What a message item says: its text parts and audio transcripts, joined."""
    texts = []
    for part in item.get("content") or []:
        text = part.get("text") if part.get("type") in ("input_text", "output_text", "text") else None
        if text is None and part.get("type") in ("input_audio", "output_audio", "audio"):
            text = part.get("transcript")
        if text:
            texts.append(text)
    return "\n".join(texts)


def items_to_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = item_text(item)
            if not text.strip():
                continue  # nothing was heard (an empty transcript) or said
            messages.append({"role": item["role"], "content": text})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item["id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") and not last["content"]:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item.get("output") or ""})
    return messages


def estimate_tokens(message: dict[str, Any]) -> int:
    size = len(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        size += len(call["function"]["name"]) + len(call["function"]["arguments"])
    return size // CHARS_PER_TOKEN + TOKENS_PER_MESSAGE


def bound_history(messages: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The newest messages that fit `budget` tokens (at least the last one). A tool result never
    starts the history without the call it answers."""
    kept: list[dict[str, Any]] = []
    used = 0
    for message in reversed(messages):
        cost = estimate_tokens(message)
        if kept and used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    while len(kept) > 1 and kept[0]["role"] == "tool":
        kept.pop(0)
    return kept
