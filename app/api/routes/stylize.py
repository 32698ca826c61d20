"""POST /v1/stylize: the fast path (a bank style or blend) and the slow path (an uploaded style image)."""

import time
from functools import partial
from typing import Annotated, Literal

import anyio
import anyio.to_thread
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app import inference
from app.api.deps import RegistryDep, ServiceDep, SettingsDep
from app.api.schemas import JobOut, error_responses
from app.errors import NotAcceptableError
from app.jobs import DONE, Job, JobManager
from app.settings import Settings
from model.errors import InvalidParameterError, UnsupportedMediaTypeError
from model.imageio import MIN_SIDE, OUTPUT_FORMATS, normalize_format
from model.style_spec import parse_style_spec
from model.stylize import check_strength

router = APIRouter(tags=["stylize"])

_MEDIA_TO_FORMAT = {media: key for key, (_, media) in OUTPUT_FORMATS.items()} | {"image/jpg": "jpeg"}

_IMAGE_RESPONSE = {
    "description": "the stylized image",
    "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    "headers": {
        "X-Style-Weights": {"description": "the normalized blend, e.g. `starry_night:0.75,the_scream:0.25`",
                            "schema": {"type": "string"}},
        "X-Inference-Ms": {"description": "milliseconds spent in the network", "schema": {"type": "string"}},
    },
}


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
    raise NotAcceptableError(f"Accept: {accept} names no format this service produces; accept image/png, "
                             "image/jpeg or image/webp, or pass ?format=png|jpeg|webp")


def check_max_side(max_side: int | None, settings: Settings) -> int:
    if max_side is None:
        return settings.max_output_side
    if not MIN_SIDE <= max_side <= settings.max_output_side:
        raise InvalidParameterError(f"max_side must be between {MIN_SIDE} and {settings.max_output_side} "
                                    f"(CINSTYLE_MAX_OUTPUT_SIDE), got {max_side}")
    return max_side


def check_wait(wait: float, settings: Settings) -> float:
    if not 0 <= wait <= settings.max_wait_s:
        raise InvalidParameterError(f"wait must be between 0 and {settings.max_wait_s:g} seconds "
                                    f"(CINSTYLE_MAX_WAIT_S), got {wait:g}")
    return wait


def missing_upload(request: Request, field: str) -> Exception:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return UnsupportedMediaTypeError(f"send the image as multipart/form-data with a file field {field!r} "
                                         f"(got Content-Type {content_type or 'none'!r})")
    return InvalidParameterError(f"the multipart file field {field!r} is required")


async def wait_for(job: Job, seconds: float, request: Request, jobs: JobManager) -> None:
    """Block up to ``seconds`` for ``job``; if the client goes away meanwhile, cancel it (nobody has its id)."""
    deadline = time.monotonic() + seconds
    next_check = 0.0
    while not job.done.is_set() and time.monotonic() < deadline:
        if time.monotonic() >= next_check:
            if await request.is_disconnected():
                jobs.cancel(job.id)
                return
            next_check = time.monotonic() + 0.25
        await anyio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def job_accepted(job: Job) -> JSONResponse:
    return JSONResponse(JobOut.of(job).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/v1/jobs/{job.id}"})


@router.post(
    "/v1/stylize",
    summary="Stylize an image with a bank style, a blend, or an uploaded style image",
    description=(
        "Send the photo as multipart field `image`.\n\n"
        "* **Fast path**: `?style=starry_night` or a blend `?style=starry_night:0.7,the_scream:0.3` "
        "(weights are normalized to sum 1). Returns the image; `X-Style-Weights` echoes the normalized blend.\n"
        "* **Slow path** (a style the bank has never seen): send the painting as multipart field `style_image` "
        "instead of `style`. Returns `202` with a job (poll `Location`), or the image directly if it is done "
        "within `?wait=` seconds.\n\n"
        "```\ncurl -F image=@photo.jpg 'http://localhost:8000/v1/stylize?style=starry_night' -o out.png\n```"
    ),
    response_class=Response,
    responses={200: _IMAGE_RESPONSE, 202: {"model": JobOut, "description": "slow path: the job was queued"},
               **error_responses(400, 406, 413, 415, 422, 429, 503)},
)
async def stylize(
    request: Request,
    service: ServiceDep,
    registry: RegistryDep,
    settings: SettingsDep,
    image: Annotated[UploadFile | None, File(description="the photo: any format Pillow decodes")] = None,
    style_image: Annotated[UploadFile | None, File(
        description="a painting the bank does not know (slow path; use instead of `style`)")] = None,
    style: Annotated[str | None, Query(
        description="a style name, or a blend `name:weight,name:weight,...`",
        openapi_examples={"single": {"value": "starry_night"},
                          "blend": {"value": "starry_night:0.7,the_scream:0.3"}})] = None,
    strength: Annotated[float, Query(description="1 = fully stylized, 0 = the original")] = 1.0,
    preserve_color: Annotated[bool, Query(description="keep the photo's colours, transfer only luminance")] = False,
    max_side: Annotated[int | None, Query(description="downscale so the longer side is at most this")] = None,
    format: Annotated[str | None, Query(description="png, jpeg or webp (default: from Accept, else png)")] = None,
    wait: Annotated[float, Query(description="slow path: block up to this many seconds for the result")] = 0.0,
    init: Annotated[Literal["content", "nearest"], Query(
        description="slow path: start from the photo, or from the bank blend nearest to the painting "
                    "(the job's summary names it as init_blend)")] = "content",
) -> Response:
    if image is None:
        raise missing_upload(request, "image")
    if (style is None) == (style_image is None):
        raise InvalidParameterError("give exactly one of the query parameter style=NAME[:W,...] (a bank style or "
                                    "blend) or the multipart file style_image (an unseen style, slow path)")
    fmt = choose_format(format, request.headers.get("accept"))
    strength = check_strength(strength)
    side = check_max_side(max_side, settings)
    wait = check_wait(wait, settings)

    if style_image is not None:
        content_data, style_data = await image.read(), await style_image.read()
        content = await anyio.to_thread.run_sync(
            inference.decode_upload, content_data, settings.max_pixels, min(side, settings.slow_max_side))
        painting = await anyio.to_thread.run_sync(
            inference.decode_upload, style_data, settings.max_pixels, settings.style_image_side)
        job = service.submit_slow_stylize(content, painting.rgb, strength=strength, preserve_color=preserve_color,
                                          fmt=fmt, init=init)
        if wait > 0:
            await wait_for(job, wait, request, service.jobs)
            if job.status == DONE:
                _, path = service.jobs.result(job.id)
                assert path is not None
                return Response(path.read_bytes(), media_type=job.media_type,
                                headers={"X-Job-Id": job.id, "Location": f"/v1/jobs/{job.id}",
                                         "X-Inference-Ms": str(job.summary.get("inference_ms", "")), "Vary": "Accept"})
        return job_accepted(job)

    view = registry.view()
    mix = parse_style_spec(style, list(view.names))
    data = await image.read()
    work = partial(inference.stylize_upload, view, data, mix, strength=strength, preserve_color=preserve_color,
                   fmt=fmt, max_side=side, max_pixels=settings.max_pixels)
    rendered = await service.gate.run(work, gone=request.is_disconnected)
    service.metrics.inference.labels("fast").observe(rendered.inference_ms / 1000.0)
    return Response(rendered.data, media_type=rendered.media_type, headers={
        "X-Style-Weights": mix.header(),
        "X-Inference-Ms": f"{rendered.inference_ms:.1f}",
        "Vary": "Accept",
    })
