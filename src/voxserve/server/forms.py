"""Reading the multipart forms of the audio upload endpoints the way the OpenAI SDK writes them.

The SDK sends lists as `key[]=a&key[]=b` and objects as `key[sub]=v`; curl users send `key=a` or a
JSON string. All of those arrive here as one plain dict for pydantic to validate.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from voxserve.errors import InvalidRequest
from voxserve.server.metrics import note_requested_model

_SUBKEY = re.compile(r"^([^\[\]]+)\[([^\[\]]*)\]$")
LIST_FIELDS = frozenset({"include", "timestamp_granularities", "languages", "keywords", "known_speaker_names"})


@dataclass
class AudioForm:
    fields: dict[str, Any]
    file: UploadFile | None

    async def close(self) -> None:
        if self.file is not None:
            await self.file.close()


async def read_audio_form(request: Request) -> AudioForm:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise InvalidRequest(
            "This endpoint takes multipart/form-data with the audio in a `file` part "
            f"(got Content-Type `{content_type or 'none'}`).",
            param="file",
        )
    try:
        form = await request.form(max_files=1, max_fields=64)
    except MultiPartException as exc:
        raise InvalidRequest(f"Could not parse the multipart body: {exc.message}") from exc

    fields: dict[str, Any] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file":
                await value.close()
                raise InvalidRequest(f"Unexpected file part `{key}`; send the audio as `file`.", param=key)
            upload = value
            continue
        if key == "file":
            raise InvalidRequest("`file` must be a file upload, not a text field.", param="file")
        name = key[:-2] if key.endswith("[]") else key
        match = _SUBKEY.match(name)
        if match:  # key[sub]=value: an object sent field by field
            parent, sub = match.groups()
            if not isinstance(fields.get(parent), dict):
                fields[parent] = {}
            fields[parent][sub] = value
        elif name in LIST_FIELDS:
            fields.setdefault(name, []).append(value)
        else:
            fields[name] = value

    note_requested_model(request, fields.get("model"))
    strategy = fields.get("chunking_strategy")
    if isinstance(strategy, str) and strategy.strip().startswith("{"):
        try:
            fields["chunking_strategy"] = json.loads(strategy)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(
                "chunking_strategy must be `auto` or a server_vad object.", param="chunking_strategy"
            ) from exc
    return AudioForm(fields, upload)
