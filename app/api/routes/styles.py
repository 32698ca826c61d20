"""The style bank: list, preview, learn a new style (a job), remove a learned one."""

import hashlib
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Form, Path
from fastapi.responses import JSONResponse, Response

from app import inference
from app.api.deps import ApiKey, RegistryDep, ServiceDep, SettingsDep
from app.api.routes.stylize import job_accepted
from app.api.schemas import (
    BINARY,
    EXAMPLE_NEW_STYLE,
    EXAMPLE_STYLE,
    STYLE_NAME_PATTERN,
    STYLE_NAME_RULE,
    FilePart,
    JobOut,
    StyleOut,
    StylesOut,
    error_responses,
)
from app.errors import NotFoundError
from app.previews import sample_image
from model.imageio import DecodedImage
from model.style_spec import StyleMix

router = APIRouter(tags=["styles"])

# A style name in a path: the bank's own pattern, so a name that cannot exist is a 422, not a lookup.
StyleName = Annotated[
    str,
    Path(
        pattern=STYLE_NAME_PATTERN,
        description=f"a style name ({STYLE_NAME_RULE})",
        openapi_examples={"bundled": {"value": EXAMPLE_STYLE}},
    ),
]
LearnedStyleName = Annotated[
    str,
    Path(
        pattern=STYLE_NAME_PATTERN,
        description=f"a learned style's name ({STYLE_NAME_RULE})",
        openapi_examples={"learned": {"value": EXAMPLE_NEW_STYLE}},
    ),
]


@router.get(
    "/v1/styles",
    summary="All styles: name, kind (builtin / learned) and preview URL",
    response_model=StylesOut,
    responses=error_responses(503),
)
async def list_styles(registry: RegistryDep) -> StylesOut:
    return StylesOut(styles=[StyleOut.of(style) for style in registry.styles()])


@router.get(
    "/v1/styles/{name}/preview",
    summary="A small PNG of the style applied to a sample picture",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422, 503)},
)
async def preview(name: StyleName, service: ServiceDep, registry: RegistryDep) -> Response:
    registry.info(name)  # 404 for an unknown style
    png = service.previews.get(name)
    if png is None:
        view = registry.view()
        sample = DecodedImage(rgb=sample_image(), alpha=None, source_format=None)
        rendered = await service.gate.run(lambda: inference.stylize_decoded(view, sample, StyleMix(((name, 1.0),))))
        service.metrics.inference.labels("preview").observe(rendered.inference_ms / 1000.0)
        png = rendered.data
        service.previews.put(name, png)
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=300"})


@router.get(
    "/v1/styles/{name}/painting",
    summary="A thumbnail of the painting the style was learned from",
    description="A JPEG of at most 256 x 256 px. `404` for a style whose painting is not known "
    "(a bank trained elsewhere without thumbnails).",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **error_responses(404, 422, 503)},
)
async def painting(name: StyleName, registry: RegistryDep) -> Response:
    style = registry.info(name)  # 404 for an unknown style
    if style.painting is None:
        raise NotFoundError(f"no thumbnail of the painting is stored for style {name!r}")
    return Response(style.painting, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=300"})


@router.post(
    "/v1/styles",
    summary="Learn a new style into the bank (a job)",
    description=(
        "Fits one new gamma/beta row for the painting with every convolution frozen; when the job is done "
        "the style is usable by name and in blends, and it survives restarts. Needs the API key when "
        "`CINSTYLE_API_KEY` is set. The answer is `202` with the job: poll `GET /v1/jobs/ID` until it is done.\n\n"
        f"```\ncurl -sS --fail -H 'X-API-Key: KEY' -F name={EXAMPLE_NEW_STYLE} -F style_image=@painting.jpg "
        "http://localhost:8000/v1/styles\n```"
    ),
    status_code=202,
    response_model=JobOut,
    dependencies=[ApiKey],
    responses=error_responses(400, 401, 409, 413, 415, 422, 429, 503),
)
async def learn_style(
    service: ServiceDep,
    registry: RegistryDep,
    settings: SettingsDep,
    name: Annotated[
        str,
        Form(
            pattern=STYLE_NAME_PATTERN,
            description=f"the new style's name ({STYLE_NAME_RULE})",
            examples=[EXAMPLE_NEW_STYLE],
        ),
    ],
    style_image: Annotated[FilePart, File(description="the painting", json_schema_extra=BINARY)],
) -> JSONResponse:
    with service.jobs.reserve() as slot:  # a full queue is a 429 before the painting is read or decoded
        data = await style_image.read()
        painting = await service.decode(data, settings.style_image_side)
        job = service.submit_learn_style(name, painting.rgb, hashlib.sha256(data).hexdigest(), reservation=slot)
    return job_accepted(job)


@router.delete(
    "/v1/styles/{name}",
    summary="Remove a learned style",
    status_code=204,
    dependencies=[ApiKey],
    responses=error_responses(401, 404, 409, 422, 503),
)
async def delete_style(name: LearnedStyleName, registry: RegistryDep) -> Response:
    await anyio.to_thread.run_sync(registry.remove, name)
    return Response(status_code=204)
