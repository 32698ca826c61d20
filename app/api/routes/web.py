"""The web page at `/`: one HTML file with its script and style sheet, shipped in the package (app/web/)."""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"


def mount(app: FastAPI) -> None:
    """`GET /` (the page) and `/web/*` (its files); neither is part of the API schema."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index() -> FileResponse:
        # no-cache: the page and the API are one version; a browser revalidates after an upgrade.
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")
