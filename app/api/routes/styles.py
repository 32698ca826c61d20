"""The style bank: list, preview, learn a new style (a job), remove a learned one."""

import hashlib
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from app import inference
from app.api.deps import ApiKey, RegistryDep, ServiceDep, SettingsDep
from app.api.routes.stylize import job_accepted, missing_upload
from app.api.schemas import JobOut, StyleOut, StylesOut, error_responses
from app.previews import sample_image
from model.bank import validate_style_name
from model.imageio import DecodedImage
from model.style_spec import StyleMix

router = APIRouter(tags=["styles"])


@router.get("/v1/styles", summary="All styles: name, kind (builtin / learned) and preview URL",
            response_model=StylesOut, responses=error_responses(503))
async def list_styles(registry: RegistryDep) -> StylesOut:
    return StylesOut(styles=[StyleOut.of(style) for style in registry.styles()])


@router.get("/v1/styles/{name}/preview", summary="A small PNG of the style applied to a sample picture",
            response_class=Response, responses={200: {"content": {"image/png": {}}},
                                                **error_responses(404, 503)})
async def preview(name: str, service: ServiceDep, registry: RegistryDep) -> Response:
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


@router.post(
    "/v1/styles",
    summary="Learn a new style into the bank (a job)",
    description=(
        "Fits one new gamma/beta row for the painting with every convolution frozen; when the job is done "
        "the style is usable by name and in blends, and it survives restarts. Needs the API key when "
        "`CINSTYLE_API_KEY` is set.\n\n"
        "```\ncurl -H 'X-API-Key: KEY' -F name=my_style -F style_image=@painting.jpg "
        "http://localhost:8000/v1/styles\n```"
    ),
    status_code=202,
    response_model=JobOut,
    dependencies=[ApiKey],
    responses=error_responses(400, 401, 409, 413, 415, 422, 429, 503),
)
async def learn_style(
    request: Request,
    service: ServiceDep,
    registry: RegistryDep,
    settings: SettingsDep,
    name: Annotated[str, Form(description="lowercase a-z, 0-9, '_' or '-' (at most 64)", examples=["my_style"])],
    style_image: Annotated[UploadFile | None, File(description="the painting")] = None,
) -> JSONResponse:
    if style_image is None:
        raise missing_upload(request, "style_image")
    validate_style_name(name)
    data = await style_image.read()
    painting = await anyio.to_thread.run_sync(
        inference.decode_upload, data, settings.max_pixels, settings.style_image_side)
    job = service.submit_learn_style(name, painting.rgb, hashlib.sha256(data).hexdigest())
    return job_accepted(job)


@router.delete("/v1/styles/{name}", summary="Remove a learned style", status_code=204,
               dependencies=[ApiKey], responses=error_responses(401, 404, 409, 422, 503))
async def delete_style(name: str, registry: RegistryDep) -> Response:
    validate_style_name(name)
    await anyio.to_thread.run_sync(registry.remove, name)
    return Response(status_code=204)
