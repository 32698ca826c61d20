"""``cinstyle serve``: uvicorn on the app, settings from CINSTYLE_* (arguments override)."""

import logging
from pathlib import Path

import uvicorn

from app.main import create_app
from app.settings import Settings
from model.cpu_memory import limit_malloc_arenas

log = logging.getLogger(__name__)


def serve(host: str | None = None, port: int | None = None, checkpoint: Path | str | None = None) -> int:
    overrides = {
        key: value for key, value in (("host", host), ("port", port), ("checkpoint", checkpoint)) if value is not None
    }
    settings = Settings(**overrides)
    limit_malloc_arenas()
    log.info(
        "serving %s on http://%s:%d (data dir %s)", settings.checkpoint, settings.host, settings.port, settings.data_dir
    )
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=15
    )
    return 0
