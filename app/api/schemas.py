"""Response bodies, as pydantic models so /docs shows them."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.jobs import Job
from model.bank import StyleInfo


class ErrorDetail(BaseModel):
    code: str = Field(examples=["unknown_style"])
    message: str = Field(examples=["unknown style 'monet'; available styles: starry_night, the_scream"])


class ErrorBody(BaseModel):
    error: ErrorDetail


class StyleOut(BaseModel):
    name: str = Field(examples=["starry_night"])
    kind: Literal["builtin", "learned"]
    preview_url: str = Field(examples=["/v1/styles/starry_night/preview"])
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, style: StyleInfo) -> "StyleOut":
        return cls(name=style.name, kind=style.kind, preview_url=f"/v1/styles/{style.name}/preview",
                   metadata=style.metadata)


class StylesOut(BaseModel):
    styles: list[StyleOut]


class JobOut(BaseModel):
    id: str = Field(examples=["3f2b6c0e9a8d4f57b1c2d3e4f5a6b7c8"])
    kind: Literal["stylize", "learn_style"]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(ge=0, le=1)
    eta_s: float | None = Field(None, description="seconds left, extrapolated from progress (running jobs)")
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    url: str
    result_url: str | None = Field(None, description="set once the job is done")

    @classmethod
    def of(cls, job: Job) -> "JobOut":
        return cls(id=job.id, kind=job.kind, status=job.status, progress=round(job.progress, 4), eta_s=job.eta_s(),
                   error=job.error, created_at=job.created_at, started_at=job.started_at,
                   finished_at=job.finished_at, params=job.params, result=job.summary, url=f"/v1/jobs/{job.id}",
                   result_url=f"/v1/jobs/{job.id}/result" if job.status == "done" else None)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    descriptions = {400: "undecodable or invalid image", 401: "missing or wrong API key", 404: "not found",
                    406: "no acceptable output format", 409: "wrong state", 413: "upload or image too large",
                    415: "unsupported media type or format", 422: "bad parameters (unknown style, bad weights, ...)",
                    429: "job queue full (see Retry-After)", 503: "not ready, or too busy (see Retry-After)"}
    return {status: {"model": ErrorBody, "description": descriptions.get(status, "error")} for status in statuses}
