"""Today's OpenAI model names, and names of their families not yet released, reach the default models."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai import OpenAI


def test_models_list_every_kind_with_the_realtime_model(client: OpenAI) -> None:
    listed = {model.id: model for model in client.models.list()}
    for model_id in ("whisper-base", "piper", "qwen2.5-coder-0.5b", "voxserve-realtime"):
        assert model_id in listed
    aliases = ("gpt-transcribe", "gpt-live-transcribe", "gpt-realtime-whisper", "gpt-realtime", "gpt-4o-audio-preview")
    for alias in aliases:
        assert alias in listed
    assert listed["gpt-realtime"].model_extra == {"root": "voxserve-realtime"}
    assert not any(model_id.startswith("voice:") for model_id in listed)


@pytest.mark.parametrize(
    ("name", "root"),
    [
        ("gpt-realtime-2.1", "voxserve-realtime"),
        ("gpt-4o-mini-realtime-preview-2024-12-17", "voxserve-realtime"),
        ("gpt-4o-mini-transcribe-2025-12-15", "whisper-base"),
        ("gpt-4o-mini-tts-2025-12-15", "piper"),
        ("gpt-4o-audio-preview-2025-06-03", "qwen2.5-coder-0.5b"),
    ],
)
def test_family_names_resolve_by_pattern(client: OpenAI, name: str, root: str) -> None:
    assert client.models.retrieve(name).model_extra == {"root": root}


def test_new_names_work_on_every_endpoint(client: OpenAI, short_english: tuple[Path, str]) -> None:
    path, _ = short_english
    for model in ("gpt-transcribe", "gpt-live-transcribe", "gpt-4o-mini-transcribe-2025-12-15"):
        assert client.audio.transcriptions.create(model=model, file=path).text.strip()
    speech = client.audio.speech.create(model="gpt-4o-mini-tts-2025-12-15", voice="marin", input="Hi.")
    assert len(speech.content) > 1000  # mp3 of a short word
    chat = client.chat.completions.create(
        model="gpt-4o-audio-preview-2025-06-03", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert chat.model == "gpt-4o-audio-preview-2025-06-03" and chat.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-realtime", messages=[{"role": "user", "content": "Hi"}])
