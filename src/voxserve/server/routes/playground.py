"""The browser playground: static files inside the package, served at `/` by the same server.

No build step and no CDN: plain HTML, CSS and JavaScript modules. The page holds no key; it uses a
key the person types, or mints a short-lived realtime key through the server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent.parent / "playground"
ASSETS_PATH = "/playground"

# Everything the page loads comes from this server; microphone audio goes out only over its WebSocket.
_CSP = (
    "default-src 'self'; connect-src 'self' blob: ws: wss:; media-src 'self' blob:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@router.get("/", include_in_schema=False)
async def playground_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": _CSP})


def mount_playground(app: FastAPI) -> None:
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="playground")


def is_playground_path(path: str) -> bool:
    """The page and its files open without a key: a browser cannot send one when it opens a page."""
    return path == "/" or path.startswith(ASSETS_PATH + "/")
