"""POST /v1/stylize: the fast path (a bank style or blend) and the slow path (an uploaded style image).

Every parameter's rule is declared on the parameter (pattern, range, enum), so the
OpenAPI schema and the validation come from one place. Two bounds are settings
(``CINSTYLE_MAX_OUTPUT_SIDE``, ``CINSTYLE_MAX_WAIT_S``), so the router is built per
app with `build_router`.
"""

import time
from typing import Annotated, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, File, Query, Request
from fastapi.responses import JSONResponse, Response

from app.api.deps import RegistryDep, ServiceDep, SettingsDep
from app.api.schemas import (
    BINARY,
    EXAMPLE_BLEND,
    EXAMPLE_STYLE,
    STYLE_NAME_RULE,
    STYLE_SPEC_PATTERN,
    FilePart,
    JobOut,
    OutputFormat,
    error_responses,
)
from app.errors import NotAcceptableError
from app.jobs import DONE, FINISHED, Job, JobQueue
from app.settings import Settings
from model.errors import InvalidParameterError, UnsupportedMediaTypeError
from model.imageio import MIN_SIDE, OUTPUT_FORMATS, normalize_format
from model.style_spec import parse_style_spec
from model.stylize import STYLE_SCALE_MAX, STYLE_SCALE_MIN

_MEDIA_TO_FORMAT = {media: key for key, (_, media) in OUTPUT_FORMATS.items()} | {"image/jpg": "jpeg"}

_IMAGE_RESPONSE = {
    "description": "the stylized image (fast path; or the slow path's result when it was done within `wait`)",
    "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    "headers": {
        "X-Style-Weights": {
            "description": f"fast path: the normalized blend, e.g. `{EXAMPLE_BLEND}`",
            "schema": {"type": "string"},
        },
        "X-Inference-Ms": {"description": "milliseconds spent in the network", "schema": {"type": "string"}},
        "X-Job-Id": {"description": "slow path: the job that made the image", "schema": {"type": "string"}},
    },
}


def accepted_response(prefix: str = "") -> dict:
    """The 202 answer of a route that may leave its work as a job."""
    return {
        "model": JobOut,
        "description": f"{prefix}the job is queued or still running (its `message` says how to fetch the result)",
        "headers": {
            "Location": {"description": "the job: `/v1/jobs/ID`", "required": True, "schema": {"type": "string"}}
        },
    }


_ACCEPTED_RESPONSE = accepted_response("slow path: ")


def choose_format(requested: str | None, accept: str | None) -> str:
    """``?format=`` wins; else the best image type in Accept; else PNG."""
    if requested:
        return normalize_format(requested)
    if not accept:
        return "png"
    ranges = []
    for position, part in enumerate(accept.split(",")):
        media, *options = (item.strip() for item in part.split(";"))
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranges.append((-quality, position, media.lower()))
    for negative_quality, _, media in sorted(ranges):
        if negative_quality >= 0:
            continue
        if media in ("*/*", "image/*"):
            return "png"
        if media in _MEDIA_TO_FORMAT:
            return _MEDIA_TO_FORMAT[media]
    raise NotAcceptableError(
        f"Accept: {accept} names no format this service produces; accept image/png, "
        "image/jpeg or image/webp, or pass ?format=png|jpeg|webp"
    )


def missing_upload(request: Request, field: str) -> Exception:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return UnsupportedMediaTypeError(
            f"send the image as multipart/form-data with a file field {field!r} "
            f"(got Content-Type {content_type or 'none'!r})"
        )
    return InvalidParameterError(f"the multipart file field {field!r} is required")


async def wait_for(job: Job, seconds: float, request: Request, jobs: JobQueue) -> Job:
    """Block up to ``seconds`` for ``job`` to finish; its latest state. If the client goes away
    meanwhile, cancel it (nobody else has its id)."""
    deadline = time.monotonic() + seconds
    next_check = 0.0
    while job.status not in FINISHED and time.monotonic() < deadline:
        if time.monotonic() >= next_check:
            if await request.is_disconnected():
                return await anyio.to_thread.run_sync(jobs.cancel, job.id)
            next_check = time.monotonic() + 0.25
        await anyio.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        job = await anyio.to_thread.run_sync(jobs.get, job.id)
    return job


def next_steps(job: Job, waited_s: float | None = None) -> str:
    """What a client holding a 202 should do next, in words (the `message` of the job it gets)."""
    url = f"/v1/jobs/{job.id}"
    if job.status in ("failed", "cancelled"):
        return f"the job {job.status}; GET {url} has the details"
    if job.status == DONE:
        return f"the job is done; fetch the result with GET {url}/result"
    state = f"still {job.status} after wait={waited_s:g} s" if waited_s else f"{job.status}"
    return (
        f"the job is {state}; poll GET {url} (status, progress, eta_s) until its status is done, "
        f"then fetch the result with GET {url}/result"
    )


def job_accepted(job: Job, waited_s: float | None = None) -> JSONResponse:
    return JSONResponse(
        JobOut.of(job, message=next_steps(job, waited_s)).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


async def image_or_accepted(job: Job, wait: float, request: Request, jobs: JobQueue) -> Response:
    """An image job's answer: its image if it is done within ``wait`` seconds, else `202` with the job."""
    if wait > 0:
        job = await wait_for(job, wait, request, jobs)
        if job.status == DONE:
            job, result = await anyio.to_thread.run_sync(jobs.read_result, job.id)
            return Response(
                result,
                media_type=job.media_type,
                headers={
                    "X-Job-Id": job.id,
                    "Location": f"/v1/jobs/{job.id}",
                    "X-Inference-Ms": str(job.summary.get("inference_ms", "")),
                    "Vary": "Accept",
                },
            )
    return job_accepted(job, waited_s=wait)


def build_router(settings: Settings) -> APIRouter:
    """The stylize route, with the bounds ``settings`` sets stated in its parameters (and so in the schema)."""
    router = APIRouter(tags=["stylize"])
    max_output_side, max_wait_s = settings.max_output_side, float(settings.max_wait_s or 0.0)

    @router.post(
        "/v1/stylize",
        summary="Stylize an image with a bank style, a blend, or an uploaded style image",
        description=(
            "Send the photo as multipart field `image`, and exactly one of:\n\n"
            f"* **Fast path**: `?style={EXAMPLE_STYLE}` or a blend `?style={EXAMPLE_BLEND}` "
            "(weights are normalized to sum 1). Returns the image; `X-Style-Weights` echoes the normalized blend.\n"
            "* **Slow path** (a style the bank has never seen): send the painting as multipart field `style_image` "
            "instead of `style`. Returns `202` with the job (poll `Location`, then fetch `/v1/jobs/ID/result`), "
            "or the image directly if the job is done within `?wait=` seconds.\n\n"
            "Giving both or neither is a `422`. `GET /v1/styles` lists the style names.\n\n"
            f"```\ncurl -sS --fail -F image=@photo.jpg -o out.png "
            f"'http://localhost:8000/v1/stylize?style={EXAMPLE_STYLE}'\n```"
        ),
        response_class=Response,
        responses={200: _IMAGE_RESPONSE, 202: _ACCEPTED_RESPONSE, **error_responses(400, 406, 413, 415, 422, 429, 503)},
    )
    async def stylize(
        request: Request,
        service: ServiceDep,
        registry: RegistryDep,
        settings: SettingsDep,
        image: Annotated[FilePart, File(description="the photo: any format Pillow decodes", json_schema_extra=BINARY)],
        style_image: Annotated[
            FilePart,
            File(
                description="a painting the bank does not know (slow path; send it instead of `style`)",
                json_schema_extra=BINARY,
            ),
        ] = None,
        # Optional parameters default to None without `| None`: absent is allowed, an explicit null is not.
        style: Annotated[
            str,
            Query(
                pattern=STYLE_SPEC_PATTERN,
                description=f"a style name, or a blend `name:weight,name:weight,...` (names: {STYLE_NAME_RULE}; "
                "weights: non-negative decimals, not all zero, normalized to sum 1; each name once)",
                openapi_examples={"single": {"value": EXAMPLE_STYLE}, "blend": {"value": EXAMPLE_BLEND}},
            ),
        ] = None,
        strength: Annotated[float, Query(ge=0, le=1, description="1 = fully stylized, 0 = the original")] = 1.0,
        preserve_color: Annotated[bool, Query(description="keep the photo's colours, transfer only luminance")] = False,
        max_side: Annotated[
            int,
            Query(
                ge=MIN_SIDE,
                le=max_output_side,
                description="downscale so the longer side is at most this (default and largest: "
                f"CINSTYLE_MAX_OUTPUT_SIDE, {max_output_side} here)",
            ),
        ] = None,
        style_scale: Annotated[
            float,
            Query(
                ge=STYLE_SCALE_MIN,
                le=STYLE_SCALE_MAX,
                description="fast path: stroke size relative to the picture (2 = strokes twice as large, bolder; "
                "0.5 = finer), the same at every output size; the output size does not change",
            ),
        ] = 1.0,
        format: Annotated[
            OutputFormat,
            Query(
                description="the output format (default: the best image type in Accept, else png); another "
                "value is a 415"
            ),
        ] = None,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=max_wait_s,
                description="slow path: block up to this many seconds for the result (at most CINSTYLE_MAX_WAIT_S, "
                f"{max_wait_s:g} here); if the job is not done by then, the answer is still `202`",
            ),
        ] = 0.0,
        init: Annotated[
            Literal["content", "nearest"],
            Query(
                description="slow path: start from the photo, or from the bank blend nearest to the painting "
                "(the job's summary names it as init_blend)"
            ),
        ] = "content",
    ) -> Response:
        if (style is None) == (style_image is None):
            raise InvalidParameterError(
                "give exactly one of the query parameter style=NAME[:W,...] (a bank style "
                "or blend) or the multipart file style_image (an unseen style, slow path)"
            )
        fmt = choose_format(format, request.headers.get("accept"))
        side = max_side if max_side is not None else settings.max_output_side

        if style_image is not None:
            if style_scale != 1.0:
                raise InvalidParameterError(
                    f"style_scale={style_scale:g} applies to the fast path (style=NAME) only; leave it out "
                    "when sending style_image"
                )
            # The queue slot first: a full queue is a 429 before either image is read or decoded.
            with service.jobs.reserve() as slot:
                content_data, style_data = await image.read(), await style_image.read()
                content = await service.decode(content_data, min(side, settings.slow_max_side))
                painting = await service.decode(style_data, settings.style_image_side)
                del content_data, style_data
                job = service.submit_slow_stylize(
                    content,
                    painting.rgb,
                    strength=strength,
                    preserve_color=preserve_color,
                    fmt=fmt,
                    init=init,
                    reservation=slot,
                )
            return await image_or_accepted(job, wait, request, service.jobs)

        view = registry.view()
        mix = parse_style_spec(style, list(view.names))
        rendered = await service.stylize(
            view,
            await image.read(),
            mix,
            strength=strength,
            preserve_color=preserve_color,
            style_scale=style_scale,
            fmt=fmt,
            max_side=side,
            gone=request.is_disconnected,
        )
        return Response(
            rendered.data,
            media_type=rendered.media_type,
            headers={
                "X-Style-Weights": mix.header(),
                "X-Inference-Ms": f"{rendered.inference_ms:.1f}",
                "Vary": "Accept",
            },
        )

    return router
