"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from voxserve.engines.registry import ModelSpec
from voxserve.errors import ModelNotFound
from voxserve.server.state import get_state

router = APIRouter()


def model_json(model_id: str, spec: ModelSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": spec.created,
        "owned_by": spec.owned_by,
    }
    if model_id != spec.id:
        body["root"] = spec.id  # an alias: say which local model answers to it
    return body


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    rows = get_state(request).registry.listing()
    # Voices are loaded like models but chosen with `voice`, so they are listed at /v1/audio/voices.
    data = [model_json(model_id, spec) for model_id, spec in rows if spec.kind != "voice"]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    spec = get_state(request).registry.resolve(model_id, param=None)
    if spec.kind == "voice":
        raise ModelNotFound(model_id, param=None)
    return model_json(model_id, spec)
