"""Jobs (slow path, learning a style): status, result, cancel."""

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from app.api.deps import ServiceDep
from app.api.schemas import JobOut, error_responses

router = APIRouter(tags=["jobs"])


@router.get("/v1/jobs/{job_id}", summary="Status, progress 0..1, ETA and error of a job", response_model=JobOut,
            responses=error_responses(404))
async def get_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.of(service.jobs.get(job_id))


@router.get("/v1/jobs/{job_id}/result", summary="The result: the image (slow path) or the learned style",
            response_class=Response,
            responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "application/json": {}}},
                       **error_responses(404, 409)})
async def get_result(job_id: str, service: ServiceDep) -> Response:
    job, path = service.jobs.result(job_id)
    if path is None:
        return JSONResponse(job.summary)
    data = await anyio.to_thread.run_sync(path.read_bytes)
    return Response(data, media_type=job.media_type or "application/octet-stream",
                    headers={"X-Job-Id": job.id, "X-Inference-Ms": str(job.summary.get("inference_ms", ""))})


@router.delete("/v1/jobs/{job_id}", summary="Cancel a job (queued: at once; running: within one step)",
               response_model=JobOut, responses=error_responses(404))
async def cancel_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.of(service.jobs.cancel(job_id))
