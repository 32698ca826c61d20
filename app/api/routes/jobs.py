"""Jobs (slow path, textures, learning a style): status, result, cancel."""

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServiceDep
from app.api.schemas import EXAMPLE_JOB_ID, JOB_ID_PATTERN, ErrorBody, JobOut, error_responses

router = APIRouter(tags=["jobs"])

# FastAPI lists a 422 for every operation with parameters; here it would be a lie in the wrong shape, so it is
# stated for what it is.
_NO_422 = {422: {"model": ErrorBody, "description": "not answered here: a malformed job id is a 404"}}

# Ids are uuid4 hex; one that does not have that form cannot exist, and is answered 404 like an unknown one
# (app.api.errors maps this parameter's validation error).
JobId = Annotated[
    str,
    Path(pattern=JOB_ID_PATTERN, description="the job's id (32 lowercase hex characters)", examples=[EXAMPLE_JOB_ID]),
]


@router.get(
    "/v1/jobs/{job_id}",
    summary="Status, progress 0..1, ETA and error of a job",
    response_model=JobOut,
    responses={**error_responses(404, 503), **_NO_422},
)
async def get_job(job_id: JobId, service: ServiceDep) -> JobOut:
    return JobOut.of(await anyio.to_thread.run_sync(service.jobs.get, job_id))


@router.get(
    "/v1/jobs/{job_id}/result",
    summary="The result: the image (slow path, texture) or the learned style",
    response_class=Response,
    responses={
        200: {
            "description": "the image (slow path, texture), or the learned style's summary (learning)",
            "content": {
                "image/png": {},
                "image/jpeg": {},
                "image/webp": {},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        **error_responses(404, 409, 503),
        **_NO_422,
    },
)
async def get_result(job_id: JobId, service: ServiceDep) -> Response:
    job, data = await anyio.to_thread.run_sync(service.jobs.read_result, job_id)
    if data is None:
        return JSONResponse(job.summary)
    return Response(
        data,
        media_type=job.media_type or "application/octet-stream",
        headers={"X-Job-Id": job.id, "X-Inference-Ms": str(job.summary.get("inference_ms", ""))},
    )


@router.delete(
    "/v1/jobs/{job_id}",
    summary="Cancel a job (queued: at once; running: within one step)",
    description="The job stays readable (status `cancelled`) until it expires; cancelling a finished job "
    "changes nothing.",
    response_model=JobOut,
    responses={**error_responses(404, 503), **_NO_422},
)
async def cancel_job(job_id: JobId, service: ServiceDep) -> JobOut:
    return JobOut.of(await anyio.to_thread.run_sync(service.jobs.cancel, job_id))
