"""Everything a running service holds: the live bank, the inference gate, the jobs, the loss network.

One `Service` per app, built in the lifespan and reached by routes through
`app.api.deps`. The bank loads in the background so ``/healthz`` answers at
once and ``/readyz`` says 503 (with the reason, if loading failed) until it is
in memory. Everything heavy -- loading, the onnx export, rebuilding the bank
after a change -- runs in worker threads, never on the event loop. The VGG-19
loss network and the content photos for learning are loaded once, on the first
job that needs them.
"""

import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import torch
from PIL import Image

from app import inference
from app.batching import BatchedRunner, Batcher
from app.concurrency import InferenceGate
from app.errors import NotReadyError
from app.jobs import Job, JobManager, JobOutcome, JobQueue, Reservation
from app.live_bank import BankSnapshot, LiveBank
from app.metrics import Metrics
from app.previews import PreviewCache
from app.settings import Settings
from app.style_store import LearnedStyle, LocalStyleStore, StyleStore
from app.tasks import (
    LEARN_JOB,
    SLOW_JOB,
    TEXTURE_JOB,
    HeavyResources,
    learned_summary,
    run_job,
    slow_images,
    warm_job_imports,
)
from model.bank import StyleBank, load_bank
from model.errors import BankFormatError
from model.imageio import DecodedImage, fitted_pixels
from model.runner import Runner, make_runner
from model.style_spec import StyleMix
from model.transformer import TransformerNet

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = settings.resolved_device()
        self.backend = settings.resolved_backend(self.device)
        self.concurrency = settings.resolved_concurrency(self.device)
        self.codec_workers = settings.resolved_codec_workers()
        self.gate = InferenceGate(self.concurrency, settings.max_waiting, metrics, codec_slots=self.codec_workers)
        self.encode_options = settings.encode_options()
        self.jpeg_codec, why_not = settings.resolved_jpeg_codec(self.device)
        if why_not is not None:
            log.warning("JPEG is decoded and encoded by Pillow on the CPU: torchcodec does not work here (%s)", why_not)
        # JPEG uploads of the fast path decoded onto (and results encoded from) this device, or Pillow's images.
        self.jpeg_device = torch.device(self.device) if self.jpeg_codec == "torchcodec" else None
        self.batcher = Batcher(
            settings.resolved_batch_max(self.device),
            settings.batch_wait_ms,
            observe=metrics.batch_size.observe,
        )
        self.store: StyleStore
        self.jobs: JobQueue
        self.watcher: Any = None
        self.redis_up: bool | None = None  # None in embedded mode
        if settings.redis_url:
            self._connect_fleet()
        else:
            self.store = LocalStyleStore(settings.styles_dir)
            self.jobs = JobManager(
                settings.jobs_dir,
                settings.queue_size,
                settings.job_workers,
                settings.result_ttl_s,
                metrics,
                reconcile=self._reconcile,
                execute=partial(run_job, self),
            )
        # Uploads for jobs are decoded here, a few at a time, so a burst cannot decode them all at once.
        self.codec_limiter = anyio.CapacityLimiter(self.codec_workers)
        self.previews = PreviewCache()
        self.registry: LiveBank | None = None
        self.load_error: str | None = None
        self.started_at = time.time()
        self.resources = HeavyResources(settings, self.device)

    def _connect_fleet(self) -> None:
        from app import fleet

        settings = self.settings
        client = fleet.connect(settings.redis_url)
        self.store = fleet.RedisStyleStore(client)
        celery_app = fleet.make_celery(settings.redis_url, visibility_timeout_s=settings.slow_time_limit_s * 4)
        self.jobs = fleet.RedisJobQueue(
            client,
            celery_app,
            settings.queue_size,
            settings.result_ttl_s,
            self.metrics,
            lost_after_s=settings.job_lost_s,
        )
        self.redis_up = False
        self.watcher = fleet.FleetWatcher(
            client, on_change=self._follow_store, reap=self.jobs.reap_lost, on_health=self._set_redis_health
        )

    def _set_redis_health(self, up: bool) -> None:
        self.redis_up = up
        self.metrics.redis_up.set(1 if up else 0)

    def _follow_store(self) -> None:
        """Fleet watcher tick (its own thread): serve the styles another replica added or removed."""
        if self.registry is not None:
            self.registry.refresh()
            self.metrics.bank_version.set(self.registry.current.version)
        counts = self.jobs.counts()
        self.metrics.jobs_queued.set(counts["queued"])
        self.metrics.jobs_running.set(counts["running"])

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self, bank: StyleBank | None = None) -> None:
        self.store.prepare()
        if self.device == "cpu" and bank is None:
            torch.set_num_threads(self.settings.torch_threads or max(1, (os.cpu_count() or 1) // self.concurrency))
        self.jobs.start()
        if self.watcher is not None:
            self.watcher.start()
        if bank is not None:  # handed in (tests): ready before the first request
            await anyio.to_thread.run_sync(self._install, bank)
        else:
            self._load_thread = threading.Thread(target=self._load, name="cinstyle-load-bank", daemon=True)
            self._load_thread.start()

    async def stop(self) -> None:
        if self.watcher is not None:
            await anyio.to_thread.run_sync(self.watcher.stop)
        await anyio.to_thread.run_sync(self.jobs.stop)
        await anyio.to_thread.run_sync(self.batcher.close)

    def _load(self) -> None:
        """Load the checkpoint and build the first snapshot (a thread of its own: the loop stays free)."""
        settings = self.settings
        log.info("loading the style bank %s onto %s", settings.checkpoint, self.device)
        # Failures are reported by /readyz and the process stays up for diagnosis. The log has the
        # whole story (paths included); clients learn only which stage failed.
        try:
            bank = load_bank(settings.checkpoint, device=self.device)
        except Exception as exc:  # noqa: BLE001
            self.load_error = (
                "the checkpoint is not a valid cinstyle bank"
                if isinstance(exc, BankFormatError)
                else f"reading the checkpoint raised {type(exc).__name__}"
            )
            log.exception("could not load the style bank %s", settings.checkpoint)
            return
        while True:
            try:
                self._install(bank)
                self.load_error = None
                return
            except NotReadyError:  # fleet mode: Redis is not up yet, and the learned styles live in it
                self.load_error = "waiting for Redis"
                time.sleep(1.0)
            except Exception as exc:  # noqa: BLE001
                self.load_error = f"preparing the {self.backend} backend raised {type(exc).__name__}"
                log.exception("could not prepare the style bank for serving with the %s backend", self.backend)
                return

    def _install(self, bank: StyleBank) -> None:
        if self.settings.fp16 and self.device == "cuda":
            bank.network.half()
        bank.network.to(self.device)
        if self.watcher is None:  # embedded mode: this process runs the jobs, so import them before serving
            warm_job_imports()
        registry = LiveBank(bank, self.store, self._make_runner)  # the onnx export happens here
        registry.listeners.append(self.previews.invalidate_all)
        registry.listeners.append(lambda _names: self._count_styles())
        self.registry = registry
        self._count_styles()
        log.info(
            "ready: %d styles on %s, backend %s, %d inference slot(s), JPEG by %s",
            len(registry.styles()),
            self.device,
            self.backend,
            self.concurrency,
            self.jpeg_codec,
        )

    def _make_runner(self, network: TransformerNet) -> Runner:
        batching = self.batcher.max_batch > 1  # same-size requests share network calls (a GPU by default)
        return make_runner(
            network,
            self.backend,
            threads=torch.get_num_threads(),
            tile_side=self.settings.tile_side,
            stats_side=self.settings.tile_stats_side,
            keep_memory_pixels=self.settings.onnx_keep_memory_pixels,
            wrap=(lambda base: BatchedRunner(base, self.batcher)) if batching else None,
        )

    def _count_styles(self) -> None:
        if self.registry is None:
            return
        styles = self.registry.styles()
        for kind in ("builtin", "learned"):
            self.metrics.styles.labels(kind).set(sum(1 for s in styles if s.kind == kind))

    @property
    def ready(self) -> bool:
        return self.registry is not None

    def require_redis(self) -> None:
        """Fleet mode: 503 while Redis (jobs and learned styles) is unreachable; the fast path keeps serving."""
        if self.redis_up is False:
            raise NotReadyError(
                "not ready: Redis (the fleet's job and style store) is unreachable; "
                "this replica recovers by itself when it is back"
            )

    def require_registry(self) -> LiveBank:
        if self.registry is None:
            reason = (
                f"loading the model failed: {self.load_error}; the server log says which file and why"
                if self.load_error
                else "the model is loading"
            )
            raise NotReadyError(f"not ready: {reason}; GET /readyz tells when it is")
        return self.registry

    async def stylize(
        self,
        view: BankSnapshot,
        data: bytes,
        mix: StyleMix,
        *,
        strength: float,
        preserve_color: bool,
        style_scale: float,
        fmt: str,
        max_side: int,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> inference.Rendered:
        """The fast path as a pipeline: decode and encode in the codec pool, the network on a slot, so one
        request's codecs overlap another's network time (see `InferenceGate.run_stages`)."""

        def infer(decoded: inference.Decoded) -> tuple[inference.Pixels, float]:
            return inference.stylize_pixels(
                view, decoded, mix, strength=strength, preserve_color=preserve_color, style_scale=style_scale
            )

        def encode(decoded: inference.Decoded, stylized: tuple[inference.Pixels, float]) -> inference.Rendered:
            return inference.encode_result(
                stylized[0], decoded, fmt, stylized[1], self.encode_options, jpeg_on_device=self.jpeg_device is not None
            )

        # Print-size work (tiled; its own network input is up to style_scale larger) one at a time.
        pixels = fitted_pixels(data, max_side) or 0
        large = pixels * max(1.0, 1.0 / style_scale) ** 2 > self.settings.tile_side**2
        rendered = await self.gate.run_stages(
            partial(inference.decode_upload, data, self.settings.max_pixels, max_side, jpeg_device=self.jpeg_device),
            infer,
            encode,
            self.codec_limiter,
            gone=gone,
            large=large,
        )
        self.metrics.inference.labels("fast").observe(rendered.inference_ms / 1000.0)
        return rendered

    async def decode(self, data: bytes, max_side: int) -> DecodedImage:
        """Decode an upload in the bounded codec pool (refused before decoding if over max_pixels)."""
        return await anyio.to_thread.run_sync(
            inference.decode_upload, data, self.settings.max_pixels, max_side, limiter=self.codec_limiter
        )

    # -- shared heavy things, loaded on first use ---------------------------------------------------------------

    def loss_network(self) -> Any:
        return self.resources.loss_network()

    def content_images(self) -> list[torch.Tensor]:
        return self.resources.content_images()

    # -- jobs: this process is their JobEnv in embedded mode ----------------------------------------------------------

    def learning_bank(self) -> StyleBank:
        return self.require_registry().view().bank

    def nearest_runner(self) -> tuple[Runner, tuple[str, ...]]:
        snapshot = self.require_registry().view()
        return snapshot.runner, snapshot.names

    def commit_learned(self, style: LearnedStyle) -> None:
        self.require_registry().commit_learned(style)

    def submit_slow_stylize(
        self,
        content: DecodedImage,
        style: Image.Image,
        *,
        strength: float,
        preserve_color: bool,
        fmt: str,
        init: str = "content",
        reservation: Reservation | None = None,
    ) -> Job:
        if init == "nearest":
            self.require_registry()
        params = {
            "strength": strength,
            "preserve_color": preserve_color,
            "format": fmt,
            "init": init,
            "width": content.rgb.width,
            "height": content.rgb.height,
        }
        return self.jobs.submit_job(SLOW_JOB, slow_images(content, style), params, reservation=reservation)

    def submit_texture(
        self,
        painting: Image.Image,
        *,
        width: int,
        height: int,
        layers: str,
        tileable: bool,
        seed: int,
        fmt: str,
        reservation: Reservation | None = None,
    ) -> Job:
        params = {
            "width": width,
            "height": height,
            "layers": layers,
            "tileable": tileable,
            "seed": seed,
            "format": fmt,
        }
        return self.jobs.submit_job(TEXTURE_JOB, {"style": painting}, params, reservation=reservation)

    def submit_learn_style(
        self, name: str, style: Image.Image, source_sha256: str, reservation: Reservation | None = None
    ) -> Job:
        registry = self.require_registry()
        registry.reserve(name)
        try:
            return self.jobs.submit_job(
                LEARN_JOB,
                {"style": style},
                {"name": name, "source_sha256": source_sha256},
                reservation=reservation,
                on_finish=lambda _job: registry.release(name),
            )
        except BaseException:
            registry.release(name)
            raise

    def _reconcile(self, job: Job) -> JobOutcome | None:
        """A learn job interrupted after its style was stored did finish: report it done."""
        name = job.params.get("name")
        if job.kind == LEARN_JOB and isinstance(name, str) and self.store.job_of(name) == job.id:
            return learned_summary(name)
        return None
