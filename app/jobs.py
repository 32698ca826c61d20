"""In-process jobs for slow work: the slow path and learning a style.

A bounded queue (`QueueFullError` -> 429 beyond ``queue_size``) feeds
``workers`` threads of their own, so slow jobs never take the fast path's
inference slots. A job is ``queued`` -> ``running`` -> ``done`` | ``failed`` |
``cancelled``; progress only moves forward, and the ETA is extrapolated from it.

Each job is a JSON record ``<jobs_dir>/<id>.json`` (and a result file
``<id>.<ext>``), both written to a temporary name and renamed. At start the
records are read back: a job that was queued or running when the process
died is reported ``failed``. Finished jobs and their results are deleted
``ttl_s`` seconds after they finish. Ids are uuid4 hex and are checked
before they are ever used in a path.
"""

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.errors import ConflictError, NotFoundError, QueueFullError
from app.metrics import Metrics
from model.bank import atomic_write_bytes
from model.errors import CancelledError, CinstyleError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_RESULT_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
INTERRUPTED = "interrupted: the server stopped before this job finished; submit it again"


@dataclass
class JobOutcome:
    """What a job's work returns: result bytes (an image) and/or a JSON-able summary."""

    data: bytes | None = None
    media_type: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobContext:
    """Handed to the work: report progress in 0..1, and stop when ``cancel`` is set."""

    job: "Job"
    cancel: threading.Event

    def progress(self, fraction: float) -> None:
        self.job.advance(fraction)


Work = Callable[[JobContext], JobOutcome]
Reconcile = Callable[["Job"], JobOutcome | None]
Execute = Callable[[str, dict[str, Any], dict[str, Any], "JobContext"], JobOutcome]


class JobQueue(Protocol):
    """What the routes and the service use; `JobManager` (in-process) and `app.fleet.RedisJobQueue`
    implement it. Blocking calls: routes run them in worker threads."""

    queue_size: int

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def reserve(self) -> "Reservation": ...

    def submit_job(
        self,
        kind: str,
        images: dict[str, Any],
        params: dict[str, Any],
        reservation: "Reservation | None" = None,
        on_finish: "Callable[[Job], None] | None" = None,
    ) -> "Job": ...

    def get(self, job_id: str) -> "Job": ...

    def cancel(self, job_id: str) -> "Job": ...

    def read_result(self, job_id: str) -> "tuple[Job, bytes | None]": ...

    def counts(self) -> dict[str, int]: ...


class Reservation:
    """One slot of the job queue, held from before an upload is read until its job is submitted.

    Taking it first means a full queue answers 429 before any image is read or
    decoded; leaving the ``with`` block without submitting gives the slot back."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self.used = False

    def consume(self) -> None:
        if self.used:
            raise RuntimeError("this queue slot was already used")
        self.used = True
        self._release()

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.used:
            self.used = True
            self._release()


@dataclass
class Job:
    id: str
    kind: str
    status: str = QUEUED
    progress: float = 0.0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    result_file: str | None = None
    media_type: str | None = None
    # runtime only (not persisted)
    work: Work | None = field(default=None, repr=False)
    on_finish: Callable[["Job"], None] | None = field(default=None, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel_requested: bool = False

    _RECORD_FIELDS = (
        "id",
        "kind",
        "status",
        "progress",
        "created_at",
        "started_at",
        "finished_at",
        "error",
        "params",
        "summary",
        "result_file",
        "media_type",
    )

    def advance(self, fraction: float) -> None:
        """Monotonic progress, clamped to [0, 1] (NaN ignored)."""
        if fraction == fraction:  # not NaN
            self.progress = max(self.progress, min(1.0, max(0.0, float(fraction))))

    def eta_s(self, now: float | None = None) -> float | None:
        if self.status != RUNNING or self.started_at is None or self.progress <= 0:
            return None
        elapsed = (now or time.time()) - self.started_at
        return round(elapsed * (1.0 - self.progress) / self.progress, 2)

    def record(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._RECORD_FIELDS}

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Job":
        values = {name: data[name] for name in cls._RECORD_FIELDS if name in data}
        job = cls(**values)
        if (
            not isinstance(job.id, str)
            or not JOB_ID.fullmatch(job.id)
            or job.status not in (QUEUED, RUNNING, *FINISHED)
        ):
            raise ValueError(f"bad job record {data.get('id')!r}")
        allowed = {f"{job.id}.{ext}" for ext in (*_RESULT_EXTENSIONS.values(), "bin")}
        if job.result_file is not None and job.result_file not in allowed:  # never a path out of the jobs dir
            raise ValueError(f"job {job.id}: bad result file name {job.result_file!r}")
        if job.status in FINISHED:
            job.done.set()
        return job


def internal_error(job_id: str) -> str:
    """What a client reads for an unexpected failure: no exception text, no paths (the log has them)."""
    return f"internal error: the job failed unexpectedly; the server log has the details (job {job_id})"


def check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise NotFoundError(f"job {job_id!r} not found: job ids are 32 lowercase hex characters")
    return job_id


class JobManager:
    def __init__(
        self,
        jobs_dir: Path,
        queue_size: int,
        workers: int,
        ttl_s: float,
        metrics: Metrics,
        reconcile: Reconcile | None = None,
        execute: Execute | None = None,
    ) -> None:
        """``reconcile(job)``: for a job a kill interrupted, the outcome it reached anyway (e.g. a learned
        style that was committed before its record said so), or None (it is reported interrupted).
        ``execute(kind, images, params, ctx)``: runs what `submit_job` queues (`app.tasks.run_job`)."""
        self.jobs_dir = jobs_dir
        self.execute = execute
        self.reconcile = reconcile
        self._reserved = 0
        self.queue_size = queue_size
        self.n_workers = workers
        self.ttl_s = ttl_s
        self.metrics = metrics
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        for index in range(self.n_workers):
            thread = threading.Thread(target=self._worker, name=f"cinstyle-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        janitor = threading.Thread(target=self._janitor, name="cinstyle-job-janitor", daemon=True)
        janitor.start()
        self._threads.append(janitor)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Cancel what is queued or running (recorded as interrupted) and wait briefly for the workers."""
        self._stopping.set()
        with self._lock:
            for job in self._jobs.values():
                if job.status in (QUEUED, RUNNING):
                    job.cancel.set()
        for _ in range(self.n_workers):
            self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:  # queued jobs no worker picked up
            for job in self._jobs.values():
                if job.status == QUEUED:
                    self._finish(job, FAILED, INTERRUPTED)

    def _recover(self) -> None:
        for tmp in self.jobs_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write torn by a kill; the previous file (if any) is intact
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                job = Job.from_record(json.loads(path.read_text()))
                if path.stem != job.id:
                    raise ValueError(f"record {path.name} holds job {job.id}")
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.warning("dropping unreadable job record %s: %s", path, exc)
                path.unlink(missing_ok=True)
                continue
            if job.status in (QUEUED, RUNNING):
                outcome = self._reconciled(job)
                if outcome is not None:
                    job.summary, job.status, job.error = outcome.summary, DONE, None
                    job.advance(1.0)
                else:
                    job.status, job.error = FAILED, INTERRUPTED
                job.finished_at = time.time()
                job.done.set()
                self._persist(job)
            elif job.status == DONE and job.result_file and not (self.jobs_dir / job.result_file).is_file():
                job.status, job.error = FAILED, "the result file is missing"
                self._persist(job)
            self._jobs[job.id] = job
        self.purge_expired()
        known = {job.result_file for job in self._jobs.values() if job.result_file}
        for path in self.jobs_dir.iterdir():  # results whose record is gone
            if path.is_file() and path.suffix != ".json" and path.name not in known:
                path.unlink(missing_ok=True)
        self._update_gauges()

    def _reconciled(self, job: Job) -> JobOutcome | None:
        if self.reconcile is None:
            return None
        try:
            return self.reconcile(job)
        except Exception:  # noqa: BLE001 - recovery goes on; the job reads interrupted
            log.exception("could not reconcile job %s", job.id)
            return None

    # -- the API -----------------------------------------------------------------------------------------------------

    def reserve(self) -> Reservation:
        """Take a queue slot now (`QueueFullError` -> 429 if none), before the upload is read."""
        with self._lock:
            queued = sum(1 for job in self._jobs.values() if job.status == QUEUED)
            if queued + self._reserved >= self.queue_size:
                self.metrics.jobs_rejected.inc()
                running = sum(1 for job in self._jobs.values() if job.status == RUNNING)
                raise QueueFullError(
                    f"the job queue is full ({queued} queued, {self._reserved} being uploaded, "
                    f"{running} running, limit {self.queue_size} queued); retry later"
                )
            self._reserved += 1
        return Reservation(self._unreserve)

    def _unreserve(self) -> None:
        with self._lock:
            self._reserved -= 1

    def submit(
        self,
        kind: str,
        work: Work,
        params: dict[str, Any] | None = None,
        on_finish: Callable[[Job], None] | None = None,
        reservation: Reservation | None = None,
    ) -> Job:
        """Queue ``work``, in the slot ``reservation`` holds (or a fresh one: 429 if the queue is full)."""
        with self._lock:
            slot = reservation if reservation is not None else self.reserve()
            slot.consume()
            job = Job(id=uuid.uuid4().hex, kind=kind, params=params or {}, work=work, on_finish=on_finish)
            self._jobs[job.id] = job
            self._persist(job)
            self._update_gauges()
        self._queue.put(job)
        return job

    def submit_job(
        self,
        kind: str,
        images: dict[str, Any],
        params: dict[str, Any],
        reservation: Reservation | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> Job:
        """Queue the job function of ``kind`` (run by ``execute``) on these images and params."""
        execute = self.execute
        if execute is None:
            raise RuntimeError("this JobManager was built without an execute function")
        return self.submit(
            kind, lambda ctx: execute(kind, images, params, ctx), params, on_finish=on_finish, reservation=reservation
        )

    def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        self.purge_expired()
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"job {job_id} not found (finished jobs are kept {self.ttl_s:g} s)")
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._lock:
            if job.status == QUEUED:
                job.cancel_requested = True
                job.cancel.set()
                self._finish(job, CANCELLED, None)
            elif job.status == RUNNING:
                job.cancel_requested = True
                job.cancel.set()  # the worker notices within one optimisation step
        return job

    def result(self, job_id: str) -> tuple[Job, Path | None]:
        job = self.get(job_id)
        if job.status != DONE:
            detail = f": {job.error}" if job.error else ""
            raise ConflictError(f"job {job_id} is {job.status}{detail}; its result exists only once it is done")
        path = self.jobs_dir / job.result_file if job.result_file else None
        return job, path

    def read_result(self, job_id: str) -> tuple[Job, bytes | None]:
        """The job and its result bytes (None for a job whose result is its summary)."""
        job, path = self.result(job_id)
        return job, path.read_bytes() if path is not None else None

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {
                status: sum(1 for j in self._jobs.values() if j.status == status)
                for status in (QUEUED, RUNNING, *FINISHED)
            }

    def purge_expired(self, now: float | None = None) -> None:
        now = now or time.time()
        with self._lock:
            expired = [
                job
                for job in self._jobs.values()
                if job.status in FINISHED and job.finished_at is not None and now - job.finished_at > self.ttl_s
            ]
            for job in expired:
                del self._jobs[job.id]
                if job.result_file:
                    (self.jobs_dir / job.result_file).unlink(missing_ok=True)
                (self.jobs_dir / f"{job.id}.json").unlink(missing_ok=True)

    # -- the workers -------------------------------------------------------------------------------------------------

    def _worker(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.status != QUEUED:  # cancelled while it waited
                    continue
                if self._stopping.is_set():
                    self._finish(job, FAILED, INTERRUPTED)
                    continue
                job.status, job.started_at = RUNNING, time.time()
                self._persist(job)
                self._update_gauges()
            self._run(job)

    def _run(self, job: Job) -> None:
        assert job.work is not None
        try:
            outcome = job.work(JobContext(job, job.cancel))
            if outcome.data is not None:
                ext = _RESULT_EXTENSIONS.get(outcome.media_type or "", "bin")
                atomic_write_bytes(self.jobs_dir / f"{job.id}.{ext}", outcome.data)
                job.result_file, job.media_type = f"{job.id}.{ext}", outcome.media_type
            job.summary = outcome.summary
            job.advance(1.0)
            status, error = DONE, None
        except CancelledError:
            status, error = (CANCELLED, None) if job.cancel_requested else (FAILED, INTERRUPTED)
        except CinstyleError as exc:
            status, error = FAILED, str(exc)
        except Exception:  # noqa: BLE001 - a job must never take its worker down
            log.exception("job %s (%s) crashed", job.id, job.kind)
            status, error = FAILED, internal_error(job.id)
        with self._lock:
            self._finish(job, status, error)

    def _finish(self, job: Job, status: str, error: str | None) -> None:
        job.status, job.error, job.finished_at = status, error, time.time()
        job.work = None  # drop the uploaded images
        self._persist(job)
        self.metrics.jobs_finished.labels(job.kind, status).inc()
        if job.started_at is not None:
            self.metrics.job_seconds.labels(job.kind).observe(job.finished_at - job.started_at)
        self._update_gauges()
        if job.on_finish is not None:
            try:
                job.on_finish(job)
            except Exception:  # noqa: BLE001
                log.exception("job %s: on_finish hook failed", job.id)
        job.done.set()

    def _janitor(self) -> None:
        interval = min(max(self.ttl_s / 4, 0.5), 60.0)
        while not self._stopping.wait(interval):
            try:
                self.purge_expired()
            except OSError as exc:
                log.warning("could not purge expired jobs: %s", exc)

    def _persist(self, job: Job) -> None:
        try:
            atomic_write_bytes(self.jobs_dir / f"{job.id}.json", json.dumps(job.record()).encode())
        except OSError as exc:
            log.error("could not write the record of job %s: %s", job.id, exc)

    def _update_gauges(self) -> None:
        counts = self.counts()
        self.metrics.jobs_queued.set(counts[QUEUED])
        self.metrics.jobs_running.set(counts[RUNNING])
