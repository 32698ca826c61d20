"""``cinstyle worker``: runs slow-path and learn-a-style jobs from the fleet's Redis queue (Celery).

Any machine, CPU or GPU (``CINSTYLE_DEVICE``); ``CINSTYLE_WORKER_CONCURRENCY`` jobs at
once (threads sharing one loss network). It loads the bundled (or configured) bank
to learn against and follows the learned styles in Redis for ``init=nearest``.
It also reaps jobs whose worker died, so a fleet with no API replica up still
reports them.
"""

import logging
import os
import time
from typing import Any

import torch

from app import fleet
from app.live_bank import LiveBank
from app.metrics import Metrics
from app.settings import Settings
from app.style_store import LearnedStyle
from app.tasks import HeavyResources
from model.bank import StyleBank, load_bank
from model.cpu_memory import limit_malloc_arenas
from model.runner import Runner, TorchRunner

log = logging.getLogger(__name__)


class WorkerEnv:
    """`app.tasks.JobEnv` of a worker process: learned styles go to Redis, where every replica picks them up."""

    def __init__(self, settings: Settings, client: Any) -> None:
        self.settings = settings
        self.device = settings.resolved_device()
        self.resources = HeavyResources(settings, self.device)
        self.store = fleet.RedisStyleStore(client)
        self.bank = LiveBank(load_bank(settings.checkpoint, device=self.device), self.store, TorchRunner)

    def loss_network(self) -> Any:
        return self.resources.loss_network()

    def content_images(self) -> list[torch.Tensor]:
        return self.resources.content_images()

    def learning_bank(self) -> StyleBank:
        return self.bank.view().bank

    def nearest_runner(self) -> tuple[Runner, tuple[str, ...]]:
        self.bank.refresh()
        snapshot = self.bank.view()
        return snapshot.runner, snapshot.names

    def commit_learned(self, style: LearnedStyle) -> None:
        self.store.save(style)


def _wait_for_redis(build, timeout_s: float = 120.0):
    """Start-up may race Redis (compose, Kubernetes): retry for a while instead of crash-looping."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return build()
        except fleet.RedisUnavailableError as exc:
            if time.monotonic() > deadline:
                raise SystemExit(f"cinstyle worker: {exc}") from exc
            log.warning("waiting for Redis: %s", exc)
            time.sleep(2.0)


def run_worker(settings: Settings) -> int:
    if not settings.redis_url:
        raise SystemExit("cinstyle worker needs CINSTYLE_REDIS_URL (e.g. redis://localhost:6379/0)")
    if settings.resolved_device() == "cpu":
        torch.set_num_threads(settings.torch_threads or max(1, (os.cpu_count() or 1) // settings.worker_concurrency))
    limit_malloc_arenas()
    client = fleet.connect(settings.redis_url)
    env = _wait_for_redis(lambda: WorkerEnv(settings, client))
    metrics = Metrics()
    celery_app = fleet.make_celery(settings.redis_url, visibility_timeout_s=settings.slow_time_limit_s * 4)
    queue = fleet.RedisJobQueue(
        client, celery_app, settings.queue_size, settings.result_ttl_s, metrics, lost_after_s=settings.job_lost_s
    )

    @celery_app.task(name=fleet.TASK_NAME)
    def run_job(job_id: str) -> None:
        fleet.run_claimed_job(client, job_id, env, settings.result_ttl_s, settings.job_heartbeat_s, metrics)

    watcher = fleet.FleetWatcher(client, on_change=lambda: None, reap=queue.reap_lost)
    watcher.start()
    log.info("worker on %s: %d job(s) at once, queue %s", env.device, settings.worker_concurrency, settings.redis_url)
    try:
        celery_app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={settings.worker_concurrency}",
                "--loglevel=INFO",
                "--queues=cinstyle",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname=cinstyle-{os.getpid()}@%h",
            ]
        )
    finally:
        watcher.stop()
    return 0
