"""Liveness and readiness."""

from fastapi import APIRouter

from app.api.deps import ServiceDep
from app.api.schemas import error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: 200 once the model is loaded, else 503 (the message says why)",
            responses=error_responses(503))
async def readyz(service: ServiceDep) -> dict:
    registry = service.require_registry()
    styles = registry.styles()
    return {
        "status": "ready",
        "device": str(registry.device),
        "backend": service.backend,
        "styles": len(styles),
        "learned_styles": sum(1 for s in styles if s.kind == "learned"),
        "concurrency": service.concurrency,
        "jobs": service.jobs.counts(),
    }
