"""Liveness and readiness."""

import anyio.to_thread
from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.schemas import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: 200 once the model is loaded, else 503 (the message says why)",
    responses=error_responses(503),
)
async def readyz(service: ServiceDep) -> dict:
    registry = service.require_registry()
    service.require_redis()  # fleet mode: 503 while Redis (jobs, learned styles) is unreachable
    styles = registry.styles()
    jobs = await anyio.to_thread.run_sync(service.jobs.counts)  # fleet mode: a Redis round trip
    return {
        "status": "ready",
        "mode": "fleet" if service.redis_up is not None else "embedded",
        "redis": None if service.redis_up is None else ("up" if service.redis_up else "down"),
        "device": str(registry.device),
        "backend": service.backend,
        "jpeg_codec": service.jpeg_codec,
        "styles": len(styles),
        "learned_styles": sum(1 for s in styles if s.kind == "learned"),
        "concurrency": service.concurrency,
        "jobs": jobs,
    }
