"""Request constraints and response bodies, as pydantic models and patterns so /docs shows exactly what is checked."""

import io
from typing import Annotated, Any, Literal

from fastapi import UploadFile
from pydantic import BaseModel, BeforeValidator, Field

from app.jobs import JOB_ID, Job
from model.bank import STYLE_NAME, StyleInfo
from model.imageio import FORMAT_ALIASES, OUTPUT_FORMATS

# -- what requests may say, stated once: the routes declare these, so validation and schema agree ----------------------

STYLE_NAME_PATTERN = STYLE_NAME.pattern  # the bank's own check (style names are file names)
JOB_ID_PATTERN = JOB_ID.pattern  # the job manager's own check (ids are file names too)
_NAME = STYLE_NAME_PATTERN.removeprefix("^").removesuffix("$")
_WEIGHT = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?"  # a non-negative decimal, as float() reads it
STYLE_SPEC_PATTERN = f"^{_NAME}(?::{_WEIGHT})?(?:,{_NAME}(?::{_WEIGHT})?)*$"
STYLE_NAME_RULE = "1-64 characters of lowercase a-z, 0-9, '_' or '-', starting with a letter or digit"

# `?format=`: the encoder's formats and their aliases (jpg).
OutputFormat = Literal[tuple(sorted((*OUTPUT_FORMATS, *FORMAT_ALIASES)))]  # type: ignore[valid-type]

# Style names of the bundled bank (model/checkpoints/default), for examples that work on a default install.
EXAMPLE_STYLE = "van_gogh_starry_night"
EXAMPLE_BLEND = "van_gogh_starry_night:0.7,munch_the_scream:0.3"
EXAMPLE_NEW_STYLE = "my_painting"  # a style to learn: not in the bundled bank
EXAMPLE_JOB_ID = "3f2b6c0e9a8d4f57b1c2d3e4f5a6b7c8"


def _text_part_as_file(value: object) -> object:
    """A multipart part without a filename (``curl -F 'image=<photo.jpg'``) arrives as text: take its bytes.

    Starlette decodes such a part as UTF-8, falling back to Latin-1; undo whichever it was. (Image
    files are never valid UTF-8, so they come back byte for byte.)
    """
    if not isinstance(value, str):
        return value
    try:
        data = value.encode("latin-1")
        data.decode("utf-8")
    except UnicodeEncodeError:
        data = value.encode("utf-8")
    except UnicodeDecodeError:
        pass  # not UTF-8: it was decoded as Latin-1, and these are its bytes
    else:
        data = value.encode("utf-8")
    return UploadFile(io.BytesIO(data), size=len(data))


# A multipart file field: declared `type: string, format: binary`, never null; a text part is read as the file.
FilePart = Annotated[UploadFile, BeforeValidator(_text_part_as_file)]
BINARY = {"format": "binary"}

# -- responses -------------------------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(examples=["unknown_style"])
    message: str = Field(
        examples=[
            "unknown style 'monet'; available styles: degas_dance_foyer_at_the_opera, "
            "gauguin_three_tahitian_women, hokusai_great_wave, ..."
        ]
    )


class ErrorBody(BaseModel):
    error: ErrorDetail


class StyleOut(BaseModel):
    name: str = Field(pattern=STYLE_NAME_PATTERN, examples=[EXAMPLE_STYLE])
    kind: Literal["builtin", "learned"]
    preview_url: str = Field(examples=[f"/v1/styles/{EXAMPLE_STYLE}/preview"])
    painting_url: str | None = Field(
        None,
        description="a thumbnail (JPEG, at most 256 px) of the painting the style was learned from; null if unknown",
        examples=[f"/v1/styles/{EXAMPLE_STYLE}/painting"],
    )
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, style: StyleInfo) -> "StyleOut":
        return cls(
            name=style.name,
            kind=style.kind,
            preview_url=f"/v1/styles/{style.name}/preview",
            painting_url=f"/v1/styles/{style.name}/painting" if style.painting is not None else None,
            metadata=style.metadata,
        )


class StylesOut(BaseModel):
    styles: list[StyleOut]


class JobOut(BaseModel):
    id: str = Field(pattern=JOB_ID_PATTERN, examples=[EXAMPLE_JOB_ID])
    kind: Literal["stylize", "learn_style", "texture"]
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(ge=0, le=1)
    eta_s: float | None = Field(None, description="seconds left, extrapolated from progress (running jobs)")
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    url: str = Field(examples=[f"/v1/jobs/{EXAMPLE_JOB_ID}"])
    result_url: str | None = Field(None, description="set once the job is done")
    message: str | None = Field(
        None,
        description="in a 202 answer: what to do next (the job is still going)",
        examples=[
            f"the job is still running after wait=60 s; poll GET /v1/jobs/"
            f"{EXAMPLE_JOB_ID} until its status is done, then fetch the image "
            f"with GET /v1/jobs/{EXAMPLE_JOB_ID}/result"
        ],
    )

    @classmethod
    def of(cls, job: Job, message: str | None = None) -> "JobOut":
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            progress=round(job.progress, 4),
            eta_s=job.eta_s(),
            error=job.error,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            params=job.params,
            result=job.summary,
            url=f"/v1/jobs/{job.id}",
            result_url=f"/v1/jobs/{job.id}/result" if job.status == "done" else None,
            message=message,
        )


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "string"}}}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": 'Bearer realm="cinstyle"', "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses (the body is always `ErrorBody`)."""
    descriptions = {
        400: "undecodable or invalid image, or a malformed multipart body",
        401: "missing or wrong API key",
        404: "not found",
        406: "no acceptable output format",
        409: "wrong state",
        413: "upload or image too large",
        415: "not multipart/form-data, or an unknown output format",
        422: "bad parameters (unknown style, bad weights, a value outside its range, ...)",
        429: "job queue full (see Retry-After)",
        503: "not ready, or too busy (see Retry-After)",
    }
    return {
        status: {
            "model": ErrorBody,
            "description": descriptions.get(status, "error"),
            **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {}),
        }
        for status in statuses
    }
