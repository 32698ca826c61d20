"""``cinstyle serve``: uvicorn on the app, settings from CINSTYLE_* (arguments override)."""

import ctypes
import logging
from pathlib import Path

import uvicorn

from app.main import create_app
from app.settings import Settings

log = logging.getLogger(__name__)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own arena (up to 8 per core) and keeps what they free:
    with dozens of request threads the resident memory then grows with the number of clients, not the
    work. Two arenas keep it flat (the usual MALLOC_ARENA_MAX=2 for threaded Python servers)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl, macOS): nothing to tune
        return
    m_arena_max = -8  # from malloc.h
    libc.mallopt(m_arena_max, arenas)


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
