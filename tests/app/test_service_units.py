"""In-process pieces: the job manager (queue, cancel, progress, persistence, expiry), content negotiation, settings."""

import json
import threading
import time

import pytest

from app.api.routes.stylize import choose_format
from app.errors import NotAcceptableError, NotFoundError, NotReadyError, OverloadedError, QueueFullError
from app.jobs import INTERRUPTED, JobManager, JobOutcome
from app.metrics import Metrics
from app.settings import Settings
from model.errors import CancelledError, CinstyleError, InvalidImageError, UnsupportedMediaTypeError


def wait_done(job, timeout_s: float = 10.0):
    assert job.done.wait(timeout_s), f"job {job.id} still {job.status}"
    return job


@pytest.fixture
def manager(tmp_path):
    jobs = JobManager(tmp_path / "jobs", queue_size=2, workers=1, ttl_s=60, metrics=Metrics())
    jobs.start()
    yield jobs
    jobs.stop(timeout_s=5)


def blocking_work(release: threading.Event, started: threading.Event | None = None):
    def work(ctx):
        if started is not None:
            started.set()
        while not release.wait(0.01):
            if ctx.cancel.is_set():
                raise CancelledError("cancelled")
        return JobOutcome(b"\x89PNG fake", "image/png", {"ok": True})

    return work


def test_job_runs_to_done_with_monotonic_progress_and_files(manager):
    seen = []

    def work(ctx):
        for value in (0.2, 0.1, 0.5, float("nan"), 2.0):
            ctx.progress(value)
            seen.append(ctx.job.progress)
        return JobOutcome(b"result", "image/png", {"n": 1})

    job = wait_done(manager.submit("stylize", work, {"a": 1}))
    assert job.status == "done" and job.progress == 1.0 and seen == [0.2, 0.2, 0.5, 0.5, 1.0]
    done, path = manager.result(job.id)
    assert path.read_bytes() == b"result" and path.name == f"{job.id}.png"
    record = json.loads((manager.jobs_dir / f"{job.id}.json").read_text())
    assert record["status"] == "done" and record["params"] == {"a": 1} and record["summary"] == {"n": 1}


def test_failures_are_reported_not_raised(manager):
    def bad_input(ctx):
        raise InvalidImageError("the style image is broken")

    def crash(ctx):
        raise RuntimeError("boom")

    assert wait_done(manager.submit("stylize", bad_input)).error == "the style image is broken"
    crashed = wait_done(manager.submit("stylize", crash))
    # no raw exception text for clients (it may hold paths); the job id leads to the log
    assert crashed.status == "failed" and "boom" not in crashed.error
    assert "internal error" in crashed.error and crashed.id in crashed.error
    with pytest.raises(Exception, match="failed"):
        manager.result(crashed.id)


def test_queue_bound_and_cancel(manager):
    release, started = threading.Event(), threading.Event()
    running = manager.submit("stylize", blocking_work(release, started))
    assert started.wait(5)
    queued = [manager.submit("stylize", blocking_work(release)) for _ in range(2)]
    with pytest.raises(QueueFullError, match="full"):
        manager.submit("stylize", blocking_work(release))
    assert manager.cancel(queued[0].id).status == "cancelled"  # a queued job: at once
    manager.cancel(running.id)
    assert wait_done(running).status == "cancelled"
    release.set()
    assert wait_done(queued[1]).status == "done"
    assert queued[0].status == "cancelled"


def test_ids_are_checked_before_use(manager):
    for bad in ("../../etc/passwd", "..", "A" * 32, "0" * 31, ""):
        with pytest.raises(NotFoundError):
            manager.get(bad)


def test_restart_marks_unfinished_jobs_failed_and_keeps_results(tmp_path):
    first = JobManager(tmp_path / "jobs", queue_size=4, workers=1, ttl_s=60, metrics=Metrics())
    first.start()
    done = wait_done(first.submit("stylize", lambda ctx: JobOutcome(b"img", "image/png")))
    release, started = threading.Event(), threading.Event()
    running = first.submit("stylize", blocking_work(release, started))
    assert started.wait(5)
    queued = first.submit("stylize", blocking_work(release))
    # simulate a crash: the records say running/queued, and no worker will ever finish them
    (tmp_path / "jobs" / ".torn.json.abc.tmp").write_bytes(b"{")
    (tmp_path / "jobs" / "deadbeef.json").write_text("not json")
    evil = {**done.record(), "id": "f" * 32, "result_file": "../../outside.png"}
    (tmp_path / "jobs" / f"{'f' * 32}.json").write_text(json.dumps(evil))
    (tmp_path / "outside.png").write_bytes(b"keep me")
    second = JobManager(tmp_path / "jobs", queue_size=4, workers=1, ttl_s=60, metrics=Metrics())
    second.start()
    try:
        assert second.get(done.id).status == "done"
        assert second.result(done.id)[1].read_bytes() == b"img"
        for job_id in (running.id, queued.id):
            assert second.get(job_id).status == "failed" and second.get(job_id).error == INTERRUPTED
        assert not list((tmp_path / "jobs").glob(".*.tmp")) and not (tmp_path / "jobs" / "deadbeef.json").exists()
        with pytest.raises(NotFoundError):
            second.get("f" * 32)
        assert (tmp_path / "outside.png").read_bytes() == b"keep me"
    finally:
        release.set()
        first.stop(5)
        second.stop(5)


def test_finished_jobs_expire(tmp_path):
    jobs = JobManager(tmp_path / "jobs", queue_size=2, workers=1, ttl_s=0.2, metrics=Metrics())
    jobs.start()
    try:
        job = wait_done(jobs.submit("stylize", lambda ctx: JobOutcome(b"img", "image/png")))
        time.sleep(0.3)
        with pytest.raises(NotFoundError, match="kept"):
            jobs.get(job.id)
        assert list((tmp_path / "jobs").iterdir()) == []
    finally:
        jobs.stop(5)


@pytest.mark.parametrize(
    ("requested", "accept", "expected"),
    [
        (None, None, "png"),
        ("JPG", "image/webp", "jpeg"),
        (None, "image/webp", "webp"),
        (None, "image/jpeg;q=0.4, image/webp;q=0.9", "webp"),
        (None, "image/*", "png"),
        (None, "image/webp;q=0, */*;q=0.1", "png"),
        (None, "text/html, image/jpeg;q=0.2", "jpeg"),
    ],
)
def test_choose_format(requested, accept, expected):
    assert choose_format(requested, accept) == expected


def test_choose_format_refuses():
    with pytest.raises(NotAcceptableError, match="image/png"):
        choose_format(None, "application/json")
    with pytest.raises(UnsupportedMediaTypeError, match="png, jpeg, webp"):
        choose_format("gif", None)


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CINSTYLE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CINSTYLE_CONCURRENCY", "3")
    monkeypatch.setenv("CINSTYLE_MAX_OUTPUT_SIDE", "256")
    monkeypatch.setenv("CINSTYLE_SLOW_TIME_LIMIT_S", "30")
    settings = Settings()
    assert settings.data_dir == tmp_path and settings.styles_dir == tmp_path / "styles"
    assert settings.resolved_concurrency("cpu") == 3 and settings.api_key is None and settings.max_output_side == 256
    assert settings.max_wait_s == 90  # a ?wait= can outlast the slow path's own limit
    # an empty key must not silently switch authentication off
    monkeypatch.setenv("CINSTYLE_API_KEY", "  ")
    with pytest.raises(ValueError, match="CINSTYLE_API_KEY is set but empty"):
        Settings()
    monkeypatch.delenv("CINSTYLE_API_KEY")
    monkeypatch.setenv("CINSTYLE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()


def test_jpeg_codec_is_torchcodec_on_cuda_by_default_and_pillow_on_the_cpu(monkeypatch):
    import torch

    from model import tensor_jpeg

    assert Settings().resolved_jpeg_codec("cpu") == ("pillow", None)
    assert Settings(jpeg_codec="torchcodec").resolved_jpeg_codec("cpu") == ("torchcodec", None)  # probed, works
    assert Settings(jpeg_codec="pillow").resolved_jpeg_codec("cuda") == ("pillow", None)  # no probe needed
    # Where the probe fails (no torchcodec, or one built for another torch): auto says why, an explicit choice fails.
    monkeypatch.setattr(tensor_jpeg, "encode_jpeg_tensor", _broken_encoder)
    assert tensor_jpeg.unavailable_reason(torch.device("cpu")) == "RuntimeError: no nvJPEG here"
    codec, reason = Settings().resolved_jpeg_codec("cuda")  # (here the probe fails sooner: no GPU at all)
    assert codec == "pillow" and reason.startswith("RuntimeError: ")
    with pytest.raises(RuntimeError, match="CINSTYLE_JPEG_CODEC=torchcodec but its JPEG codecs do not work on cpu"):
        Settings(jpeg_codec="torchcodec").resolved_jpeg_codec("cpu")


def _broken_encoder(pixels, quality):
    raise RuntimeError("no nvJPEG here")


def test_a_failing_device_encoder_falls_back_to_pillow(monkeypatch, caplog):
    import numpy as np
    import torch

    from app import inference
    from model.imageio import EncodeOptions, decode_image, encode_image

    pixels = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 24, 40), dtype=np.uint8))
    decoded = decode_image(encode_image(_image_of(pixels), "png"))
    options = EncodeOptions(jpeg_quality=80)
    works = inference.encode_result(pixels, decoded, "jpeg", 1.0, options, jpeg_on_device=True)
    monkeypatch.setattr(inference, "encode_jpeg_tensor", _broken_encoder)
    falls_back = inference.encode_result(pixels, decoded, "jpeg", 1.0, options, jpeg_on_device=True)
    assert falls_back.data == works.data == encode_image(_image_of(pixels), "jpeg", quality=80)  # same libjpeg
    assert (falls_back.width, falls_back.height) == (40, 24)
    assert "Pillow encodes it" in caplog.text


def _image_of(pixels):
    from PIL import Image

    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), "RGB")


@pytest.mark.parametrize(
    ("error", "status", "level"),
    [
        (NotReadyError("not ready: the model is loading"), 503, "WARNING"),
        (OverloadedError("too many requests are waiting", retry_after_s=2), 503, "WARNING"),
        (CinstyleError("an internal failure"), 500, "ERROR"),
    ],
    ids=["not-ready", "overloaded", "internal"],
)
def test_expected_503s_are_logged_as_warnings_and_failures_as_errors(error, status, level, caplog):
    import asyncio

    from starlette.requests import Request

    from app.api.errors import _cinstyle_error

    request = Request({"type": "http", "method": "GET", "path": "/readyz", "headers": [], "query_string": b""})
    with caplog.at_level("INFO", logger="app.api.errors"):
        response = asyncio.run(_cinstyle_error(request, error))
    assert response.status_code == status
    assert [record.levelname for record in caplog.records] == [level]
