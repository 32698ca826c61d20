"""POST /v1/textures: texture synthesis from a painting (the Gram method on its own), as a job.

The slow path's job machinery (202 + Location, ``wait``, progress, ETA, cancel, result
formats) with the painting as the only image. The bounds that are settings
(``CINSTYLE_SLOW_MAX_SIDE``, ``CINSTYLE_MAX_WAIT_S``) are stated in the parameters,
so the router is built per app with `build_router`.
"""

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, File, Query, Request
from fastapi.responses import Response

from app.api.deps import ServiceDep, SettingsDep
from app.api.routes.stylize import accepted_response, choose_format, image_or_accepted
from app.api.schemas import BINARY, FilePart, OutputFormat, error_responses
from app.settings import Settings
from model.imageio import MIN_SIDE
from model.slow import TEXTURE_LAYERS

TextureLayer = Literal[TEXTURE_LAYERS]  # type: ignore[valid-type]
MAX_SEED = 2**32 - 1
DEFAULT_SIDE = 256

_IMAGE_RESPONSE = {
    "description": "the texture, when the job was done within `wait`",
    "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}},
    "headers": {
        "X-Job-Id": {"description": "the job that made the image", "schema": {"type": "string"}},
        "X-Inference-Ms": {"description": "milliseconds spent synthesizing", "schema": {"type": "string"}},
    },
}
_ACCEPTED_RESPONSE = accepted_response()


def build_router(settings: Settings) -> APIRouter:
    router = APIRouter(tags=["textures"])
    max_side, max_wait_s = settings.slow_max_side, float(settings.max_wait_s or 0.0)
    default_side = min(DEFAULT_SIDE, max_side)

    def side(which: str) -> object:
        return Query(
            ge=MIN_SIDE,
            le=max_side,
            description=f"the texture's {which} in pixels ({MIN_SIDE} to CINSTYLE_SLOW_MAX_SIDE, {max_side} here)",
        )

    @router.post(
        "/v1/textures",
        summary="Synthesize a new texture of any size from a painting (a job)",
        description=(
            "Gatys et al.'s texture synthesis: pixels start from noise and are optimised until their VGG-19 "
            "Gram matrices match the painting's, with the slow path's optimiser, coarse to fine. `layers` is the "
            "deepest layer matched (relu1_1 up to it): deeper layers see larger receptive fields and give larger, "
            "more faithful structures. `tileable=true` makes a texture that repeats without a visible seam.\n\n"
            "Send the painting as multipart field `style_image`. The answer is `202` with the job (poll "
            "`Location`, then fetch `/v1/jobs/ID/result`), or the image if the job is done within `?wait=` "
            "seconds.\n\n"
            "```\ncurl -sS --fail -F style_image=@painting.jpg -o texture.png "
            "'http://localhost:8000/v1/textures?width=256&height=256&layers=relu4_1&tileable=true&wait=300'\n```"
        ),
        response_class=Response,
        responses={200: _IMAGE_RESPONSE, 202: _ACCEPTED_RESPONSE, **error_responses(400, 406, 413, 415, 422, 429, 503)},
    )
    async def synthesize(
        request: Request,
        service: ServiceDep,
        settings: SettingsDep,
        style_image: Annotated[
            FilePart,
            File(
                description="the painting (or a photo of a material): any format Pillow decodes",
                json_schema_extra=BINARY,
            ),
        ],
        width: Annotated[int, side("width")] = default_side,
        height: Annotated[int, side("height")] = default_side,
        layers: Annotated[
            TextureLayer,
            Query(description="the deepest VGG-19 layer whose Gram matrix is matched (all relu*_1 up to it)"),
        ] = "relu5_1",
        tileable: Annotated[bool, Query(description="repeat without a seam (wrap-around padding)")] = False,
        seed: Annotated[
            int,
            Query(
                ge=0, le=MAX_SEED, description="the starting noise (default: a random one, stated in the job's params)"
            ),
        ] = None,
        format: Annotated[
            OutputFormat,
            Query(description="the output format (default: the best image type in Accept, else png)"),
        ] = None,
        wait: Annotated[
            float,
            Query(
                ge=0,
                le=max_wait_s,
                description="block up to this many seconds for the result (at most CINSTYLE_MAX_WAIT_S, "
                f"{max_wait_s:g} here); if the job is not done by then, the answer is still `202`",
            ),
        ] = 0.0,
    ) -> Response:
        fmt = choose_format(format, request.headers.get("accept"))
        with service.jobs.reserve() as slot:  # a full queue is a 429 before the painting is read or decoded
            data = await style_image.read()
            painting = await service.decode(data, settings.style_image_side)
            del data
            job = service.submit_texture(
                painting.rgb,
                width=width,
                height=height,
                layers=layers,
                tileable=tileable,
                seed=seed if seed is not None else secrets.randbelow(MAX_SEED + 1),
                fmt=fmt,
                reservation=slot,
            )
        return await image_or_accepted(job, wait, request, service.jobs)

    return router
