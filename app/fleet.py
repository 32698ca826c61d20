"""Fleet mode (``CINSTYLE_REDIS_URL`` set): stateless API replicas, `cinstyle worker` processes, one Redis.

What lives in Redis (every key starts with ``cinstyle:``):

| key | what |
| --- | --- |
| ``styles`` (hash) | learned styles: name -> the same safetensors bytes as a local ``<name>.safetensors`` |
| ``styles:version`` | bumped on every save/delete; ``styles:changed`` (pub/sub) announces it |
| ``styles:pending:<name>`` | a learn job holds the name (SET NX, expires) |
| ``job:<id>`` (hash) | the job record (status, progress, times, error, params, summary) |
| ``job:<id>:inputs`` (hash) | the decoded uploads as PNG, deleted once a worker has read them |
| ``job:<id>:result`` | the result image; record and result expire ``CINSTYLE_RESULT_TTL_S`` after the end |
| ``job:<id>:cancel`` | set by any replica; the worker checks it between optimisation steps |
| ``queue:queued``, ``queue:reserved`` (zsets) | the fleet-wide queue bound: queued jobs and upload slots |
| ``queue:running`` (zset) | running jobs by last heartbeat: a job whose worker stopped is failed after
  ``CINSTYLE_JOB_LOST_S`` |

Jobs travel on Celery (Redis broker, JSON messages holding only the job id; nothing
is unpickled). Messages are acknowledged late, so one whose worker was killed is
redelivered after the broker's visibility timeout (4 x the slow path's limit; a message
redelivered while its job still runs is skipped too); the job itself is reported failed
by the heartbeat reaper within ``CINSTYLE_JOB_LOST_S``, and a redelivered job that is no
longer queued is skipped, so a job never runs twice and never stays ``running``.
"""

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import redis

from app.errors import ConflictError, NotFoundError, NotReadyError, QueueFullError
from app.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    Job,
    JobContext,
    JobOutcome,
    Reservation,
    check_job_id,
    internal_error,
)
from app.metrics import Metrics
from app.style_store import LearnedStyle
from model.bank import learned_style_from_bytes, learned_style_to_bytes, validate_style_name
from model.errors import BankFormatError, CancelledError, CinstyleError

log = logging.getLogger(__name__)

PREFIX = "cinstyle:"
STYLES, STYLES_VERSION, STYLES_CHANNEL = f"{PREFIX}styles", f"{PREFIX}styles:version", f"{PREFIX}styles:changed"
QUEUED_SET, RESERVED_SET, RUNNING_SET = f"{PREFIX}queue:queued", f"{PREFIX}queue:reserved", f"{PREFIX}queue:running"
TASK_NAME = "cinstyle.run_job"
RESERVATION_S = 120  # an upload slot a crashed replica never used frees itself after this
PENDING_NAME_S = 6 * 3600  # a learn job's claim on its name, if nothing releases it
LOST = "lost: the worker running this job stopped (killed or unreachable) before it finished; submit it again"


class RedisUnavailableError(NotReadyError):
    """Redis does not answer: job and style routes get 503 until it is back."""

    code = "redis_unavailable"


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=10)


@contextmanager
def redis_errors():
    """Redis failures become a clear 503 (`RedisUnavailableError`)."""
    try:
        yield
    except redis.RedisError as exc:
        raise RedisUnavailableError(
            f"the job and style store (Redis) is unreachable ({type(exc).__name__}); retry in a moment"
        ) from exc


def _job_key(job_id: str, suffix: str = "") -> str:
    return f"{PREFIX}job:{job_id}{suffix}"


# -- learned styles ---------------------------------------------------------------------------------------------------


class RedisStyleStore:
    """`app.style_store.StyleStore` in Redis: every replica and worker sees the same learned styles."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def prepare(self) -> None:
        pass

    def version(self) -> int:
        with redis_errors():
            return int(self.redis.get(STYLES_VERSION) or 0)

    def load_all(self) -> tuple[int, list[LearnedStyle]]:
        with redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.get(STYLES_VERSION)
            pipe.hgetall(STYLES)
            version, entries = pipe.execute()
        styles = []
        for raw_name, data in sorted(entries.items()):
            name = raw_name.decode()
            try:
                styles.append(LearnedStyle(*learned_style_from_bytes(data, expected_name=name)))
            except BankFormatError as exc:
                log.warning("skipping learned style %s from Redis: %s", name, exc)
        return int(version or 0), styles

    def save(self, style: LearnedStyle) -> int:
        data = learned_style_to_bytes(style.name, style.rows, style.fingerprint, style.metadata, style.painting)
        with redis_errors():
            if not self.redis.hsetnx(STYLES, style.name, data):
                raise ConflictError(f"a style named {style.name!r} already exists")
            return self._bump()

    def delete(self, name: str) -> int:
        with redis_errors():
            self.redis.hdel(STYLES, name)
            return self._bump()

    def _bump(self) -> int:
        version = int(self.redis.incr(STYLES_VERSION))
        self.redis.publish(STYLES_CHANNEL, str(version))
        return version

    def job_of(self, name: str) -> str | None:
        with redis_errors():
            data = self.redis.hget(STYLES, name)
        if data is None:
            return None
        try:
            return learned_style_from_bytes(data, expected_name=name)[3].get("job_id")
        except BankFormatError:
            return None

    def reserve_name(self, name: str) -> None:
        validate_style_name(name)
        with redis_errors():
            if self.redis.hexists(STYLES, name):
                raise ConflictError(f"a style named {name!r} already exists; pick another name or DELETE it first")
            if not self.redis.set(f"{PREFIX}styles:pending:{name}", "1", nx=True, ex=PENDING_NAME_S):
                raise ConflictError(f"a style named {name!r} is being learned by another job")

    def release_name(self, name: str) -> None:
        with redis_errors():
            self.redis.delete(f"{PREFIX}styles:pending:{name}")


# -- jobs -------------------------------------------------------------------------------------------------------------

# Take an upload slot if queued jobs + slots being uploaded stay under the bound (atomic across replicas).
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""
# Claim a queued job for a worker: only one claimer wins, and a cancelled or lost job is not run.
_CLAIM = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[3], 'status') ~= '"queued"' then return 0 end
redis.call('HSET', KEYS[3], 'status', '"running"', 'started_at', ARGV[3], 'worker', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
# Finish a job once: the first of the worker, a cancel or the lost-job reaper wins.
_FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= '"queued"' and status ~= '"running"' then return 0 end
if ARGV[1] == 'lost' and (redis.call('ZSCORE', KEYS[2], ARGV[2]) == false
    or tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2])) > tonumber(ARGV[3])) then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"""

_RECORD_FIELDS = Job._RECORD_FIELDS


def _encode_record(values: dict[str, Any]) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in values.items()}


def _decode_job(raw: dict[bytes, bytes]) -> Job:
    data = {key.decode(): json.loads(value) for key, value in raw.items() if key.decode() in _RECORD_FIELDS}
    return Job.from_record(data)


class RedisJobQueue:
    """`app.jobs.JobQueue` on Redis + Celery: any replica submits, polls, cancels and fetches any job."""

    def __init__(
        self, client: redis.Redis, celery_app: Any, queue_size: int, ttl_s: float, metrics: Metrics, lost_after_s: float
    ) -> None:
        self.redis = client
        self.celery = celery_app
        self.queue_size = queue_size
        self.ttl_s = ttl_s
        self.metrics = metrics
        self.lost_after_s = lost_after_s
        self._reserve = client.register_script(_RESERVE)
        self._finish = client.register_script(_FINISH)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def reserve(self) -> Reservation:
        token = uuid.uuid4().hex
        now = time.time()
        with redis_errors():
            taken = self._reserve(
                keys=[QUEUED_SET, RESERVED_SET], args=[now, now + RESERVATION_S, self.queue_size, token]
            )
        if not taken:
            counts = self.counts()
            self.metrics.jobs_rejected.inc()
            raise QueueFullError(
                f"the job queue is full ({counts[QUEUED]} queued across the fleet, limit "
                f"{self.queue_size}); retry later"
            )

        def release() -> None:
            try:
                self.redis.zrem(RESERVED_SET, token)
            except redis.RedisError:
                log.warning("could not release an upload slot; it frees itself in %d s", RESERVATION_S)

        return Reservation(release)

    def submit_job(
        self,
        kind: str,
        images: dict[str, Any],
        params: dict[str, Any],
        reservation: Reservation | None = None,
        on_finish: Callable[[Job], None] | None = None,
    ) -> Job:
        from app.tasks import pack_images

        slot = reservation if reservation is not None else self.reserve()
        job = Job(id=uuid.uuid4().hex, kind=kind, params=params)
        packed = pack_images(images)
        with redis_errors():
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(_job_key(job.id), mapping=_encode_record(job.record()))
            pipe.expire(_job_key(job.id), PENDING_NAME_S)
            if packed:
                pipe.hset(_job_key(job.id, ":inputs"), mapping=packed)
                pipe.expire(_job_key(job.id, ":inputs"), PENDING_NAME_S)
            pipe.zadd(QUEUED_SET, {job.id: job.created_at})
            pipe.execute()
            slot.consume()  # the queued entry now holds the place
            self.celery.send_task(TASK_NAME, args=[job.id])
        return job

    def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        with redis_errors():
            raw = self.redis.hgetall(_job_key(job_id))
        if not raw:
            raise NotFoundError(f"job {job_id} not found (finished jobs are kept {self.ttl_s:g} s)")
        return _decode_job(raw)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with redis_errors():
            if job.status == QUEUED:
                finish_job(self.redis, self._finish, job, CANCELLED, None, self.ttl_s)
                self._release_name(job)
            elif job.status == RUNNING:
                self.redis.set(_job_key(job_id, ":cancel"), "1", ex=int(max(self.ttl_s, 60)))
                self.redis.hset(_job_key(job_id), "cancel_requested", json.dumps(True))
        return self.get(job_id)

    def read_result(self, job_id: str) -> tuple[Job, bytes | None]:
        job = self.get(job_id)
        if job.status != DONE:
            detail = f": {job.error}" if job.error else ""
            raise ConflictError(f"job {job_id} is {job.status}{detail}; its result exists only once it is done")
        if job.result_file is None:
            return job, None
        with redis_errors():
            data = self.redis.get(_job_key(job_id, ":result"))
        if data is None:
            raise NotFoundError(f"the result of job {job_id} has expired")
        return job, data

    def counts(self) -> dict[str, int]:
        with redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            pipe.zcard(QUEUED_SET)
            pipe.zcard(RUNNING_SET)
            queued, running = pipe.execute()
        return {QUEUED: int(queued), RUNNING: int(running)}

    def reap_lost(self) -> int:
        """Fail the running jobs whose worker stopped sending heartbeats; returns how many."""
        deadline = time.time() - self.lost_after_s
        lost = 0
        for raw_id in self.redis.zrangebyscore(RUNNING_SET, "-inf", deadline):
            job_id = raw_id.decode()
            raw = self.redis.hgetall(_job_key(job_id))
            if not raw:
                self.redis.zrem(RUNNING_SET, job_id)
                continue
            job = _decode_job(raw)
            if finish_job(self.redis, self._finish, job, FAILED, LOST, self.ttl_s, lost_before=deadline):
                log.warning("job %s: its worker stopped; reported failed", job_id)
                self.metrics.jobs_finished.labels(job.kind, FAILED).inc()
                self._release_name(job)
                lost += 1
        return lost

    def _release_name(self, job: Job) -> None:
        if job.kind == "learn_style" and isinstance(job.params.get("name"), str):
            self.redis.delete(f"{PREFIX}styles:pending:{job.params['name']}")


def finish_job(
    client: redis.Redis,
    script: Any,
    job: Job,
    status: str,
    error: str | None,
    ttl_s: float,
    summary: dict[str, Any] | None = None,
    result: tuple[bytes, str] | None = None,
    lost_before: float | None = None,
) -> bool:
    """Record the end of ``job`` once (False if it had ended already); result and record expire after ``ttl_s``."""
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": time.time()}
    if summary is not None:
        values["summary"] = summary
    if status == DONE:
        values["progress"] = 1.0
    if result is not None:
        client.set(_job_key(job.id, ":result"), result[0], ex=int(ttl_s) + 60)
        values["result_file"], values["media_type"] = f"{job.id}.bin", result[1]
    args: list[Any] = ["lost" if lost_before is not None else "end", job.id, lost_before or 0]
    for key, value in _encode_record(values).items():
        args += [key, value]
    ended = bool(script(keys=[_job_key(job.id), RUNNING_SET, QUEUED_SET], args=args))
    if not ended and result is not None:
        client.delete(_job_key(job.id, ":result"))  # the job had been ended already (cancelled or lost)
    if ended:
        client.expire(_job_key(job.id), int(ttl_s))
        client.delete(_job_key(job.id, ":inputs"), _job_key(job.id, ":cancel"))
    return ended


# -- the worker side --------------------------------------------------------------------------------------------------


class _RedisCancel:
    """Quacks like the `threading.Event` the optimisers poll: set by any replica through Redis."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self.redis, self.key = client, _job_key(job_id, ":cancel")
        self._set = False
        self._checked = 0.0

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self._set and now - self._checked > 0.2:
            self._checked = now
            try:
                self._set = bool(self.redis.exists(self.key))
            except redis.RedisError:
                pass  # keep working; the next check may get through
        return self._set

    def set(self) -> None:
        self._set = True


class _RedisProgress(JobContext):
    """Progress written to the job record (at most every 0.3 s) and a heartbeat for the lost-job reaper."""

    def __init__(self, client: redis.Redis, job: Job) -> None:
        super().__init__(job=job, cancel=_RedisCancel(client, job.id))  # type: ignore[arg-type]
        self.redis = client
        self._written = 0.0

    def progress(self, fraction: float) -> None:
        self.job.advance(fraction)
        now = time.monotonic()
        if now - self._written > 0.3:
            self._written = now
            try:
                self.redis.hset(_job_key(self.job.id), "progress", json.dumps(self.job.progress))
            except redis.RedisError:
                pass


def worker_id() -> str:
    """Which process runs a job (kept in its record's ``worker`` field, for operators)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_claimed_job(
    client: redis.Redis, job_id: str, env: Any, ttl_s: float, heartbeat_s: float, metrics: Metrics | None = None
) -> str | None:
    """Claim ``job_id`` and run it (the Celery task's body); returns its final status, or None if not claimed."""
    from app.tasks import run_job, unpack_images

    check_job_id(job_id)
    finish = client.register_script(_FINISH)
    now = time.time()
    claimed = client.register_script(_CLAIM)(
        keys=[QUEUED_SET, RUNNING_SET, _job_key(job_id)], args=[job_id, now, json.dumps(now), json.dumps(worker_id())]
    )
    if not claimed:
        log.info("job %s is no longer queued (cancelled, lost or run elsewhere); skipped", job_id)
        return None
    job = _decode_job(client.hgetall(_job_key(job_id)))
    stop_heartbeat = threading.Event()

    def heartbeat() -> None:
        while not stop_heartbeat.wait(heartbeat_s):
            try:
                client.zadd(RUNNING_SET, {job_id: time.time()}, xx=True)
            except redis.RedisError:
                pass

    beating = threading.Thread(target=heartbeat, name=f"cinstyle-heartbeat-{job_id[:8]}", daemon=True)
    beating.start()
    context = _RedisProgress(client, job)
    result = summary = None
    try:
        images = unpack_images(
            {k.decode(): v for k, v in client.hgetall(_job_key(job_id, ":inputs")).items()}, env.settings.max_pixels
        )
        client.delete(_job_key(job_id, ":inputs"))  # in this process's memory now; Redis need not keep it
        outcome: JobOutcome = run_job(env, job.kind, images, job.params, context)
        if outcome.data is not None:
            result = (outcome.data, outcome.media_type or "application/octet-stream")
        status, error, summary = DONE, None, outcome.summary
    except CancelledError:
        status, error = (CANCELLED, None) if context.cancel.is_set() else (FAILED, INTERRUPTED)
    except CinstyleError as exc:
        status, error = FAILED, str(exc)
    except Exception:  # noqa: BLE001 - a job must never take its worker down
        log.exception("job %s (%s) crashed", job.id, job.kind)
        status, error = FAILED, internal_error(job.id)
    finally:
        stop_heartbeat.set()
    if not finish_job(client, finish, job, status, error, ttl_s, summary=summary, result=result):
        log.warning("job %s had already been ended (reported lost?); its outcome %s is dropped", job_id, status)
    if job.kind == "learn_style" and isinstance(job.params.get("name"), str):
        client.delete(f"{PREFIX}styles:pending:{job.params['name']}")
    if metrics is not None:
        metrics.jobs_finished.labels(job.kind, status).inc()
    return status


def make_celery(redis_url: str, visibility_timeout_s: float) -> Any:
    """The Celery app: Redis broker, JSON only, late acknowledgement, one message at a time per worker slot."""
    from celery import Celery

    celery_app = Celery("cinstyle", broker=redis_url)
    celery_app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": int(visibility_timeout_s)},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="cinstyle",
    )
    return celery_app


class FleetWatcher:
    """A thread in every API replica and worker: follows the style version (pub/sub, and a poll every
    second as a fallback) and reaps jobs whose worker stopped. Survives Redis restarts."""

    def __init__(
        self,
        client: redis.Redis,
        on_change: Callable[[], Any],
        reap: Callable[[], Any] | None = None,
        on_health: Callable[[bool], None] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        self.redis = client
        self.on_change, self.reap, self.on_health = on_change, reap, on_health
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cinstyle-fleet-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(STYLES_CHANNEL)
                    self._tick()  # catch up on what changed while we were not listening
                message = pubsub.get_message(timeout=self.interval_s)
                self._tick()
                if message is not None:
                    log.debug("style version %s announced", message.get("data"))
            except (redis.RedisError, RedisUnavailableError) as exc:
                if self.on_health is not None:
                    self.on_health(False)
                log.warning("fleet watcher: Redis unreachable (%s); retrying", type(exc).__name__)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except redis.RedisError:
                        pass
                pubsub = None
                self._stop.wait(self.interval_s)
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad update
                log.exception("fleet watcher: update failed")
                self._stop.wait(self.interval_s)

    def _tick(self) -> None:
        self.redis.ping()
        if self.on_health is not None:
            self.on_health(True)
        self.on_change()
        if self.reap is not None:
            self.reap()
