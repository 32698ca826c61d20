"""Everything a running service holds: the bank, the inference gate, the jobs, the loss network.

One `Service` per app, built in the lifespan and reached by routes through
`app.api.deps`. The bank loads in the background so ``/healthz`` answers at
once and ``/readyz`` says 503 (with the reason, if loading failed) until it is
in memory. The VGG-19 loss network and the content photos for learning are
loaded once, on the first job that needs them.
"""

import asyncio
import logging
import os
import threading
import time
from typing import Any

import anyio.to_thread
import torch
from PIL import Image

from app import inference
from app.concurrency import InferenceGate
from app.errors import NotReadyError
from app.jobs import Job, JobContext, JobManager, JobOutcome
from app.metrics import Metrics
from app.previews import PreviewCache
from app.settings import Settings
from app.styles import StyleRegistry
from model.bank import StyleBank, load_bank
from model.errors import CancelledError
from model.imageio import DecodedImage

log = logging.getLogger(__name__)

SLOW_JOB, LEARN_JOB = "stylize", "learn_style"


class Service:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = settings.resolved_device()
        self.backend = settings.resolved_backend(self.device)
        self.concurrency = settings.resolved_concurrency(self.device)
        self.gate = InferenceGate(self.concurrency, settings.max_waiting, metrics)
        self.jobs = JobManager(settings.jobs_dir, settings.queue_size, settings.job_workers, settings.result_ttl_s,
                               metrics)
        self.previews = PreviewCache()
        self.registry: StyleRegistry | None = None
        self.load_error: str | None = None
        self.started_at = time.time()
        self._load_task: asyncio.Task | None = None
        self._heavy_lock = threading.Lock()
        self._loss_network: Any = None
        self._content: list[torch.Tensor] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self, bank: StyleBank | None = None) -> None:
        self.settings.styles_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.settings.styles_dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a learned style torn by a kill; never loaded anyway
        if self.device == "cpu" and bank is None:
            torch.set_num_threads(self.settings.torch_threads or max(1, (os.cpu_count() or 1) // self.concurrency))
        self.jobs.start()
        if bank is not None:
            self._install(bank, merge=True)
        else:
            self._load_task = asyncio.create_task(self._load())

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        await anyio.to_thread.run_sync(self.jobs.stop)

    async def _load(self) -> None:
        settings = self.settings
        log.info("loading the style bank %s onto %s", settings.checkpoint, self.device)
        try:
            bank = await anyio.to_thread.run_sync(
                lambda: load_bank(settings.checkpoint, learned_dir=settings.styles_dir, device=self.device))
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, the process stays up for diagnosis
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("could not load the style bank: %s", self.load_error)
            return
        try:
            self._install(bank, merge=False)
        except Exception as exc:  # noqa: BLE001 - e.g. the onnx export; /readyz says so instead of "loading"
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("could not prepare the style bank for serving")

    def _install(self, bank: StyleBank, merge: bool) -> None:
        if self.settings.fp16 and self.device == "cuda":
            bank.network.half()
        bank.network.to(self.device)
        registry = StyleRegistry(bank, self.settings.styles_dir, self._runner_factory())
        if merge:
            registry.merge_learned()
        registry.view()  # the onnx backend exports here, not on the first request
        registry.listeners.append(self.previews.invalidate)
        registry.listeners.append(lambda _name: self._count_styles())
        self.registry = registry
        self._count_styles()
        log.info("ready: %d styles on %s, backend %s, %d inference slot(s)", len(registry.styles()), self.device,
                 self.backend, self.concurrency)

    def _runner_factory(self):
        if self.backend != "onnx":
            return None
        from model.onnx_backend import OnnxNetwork

        return lambda network: OnnxNetwork(network, threads=torch.get_num_threads())

    def _count_styles(self) -> None:
        if self.registry is None:
            return
        styles = self.registry.styles()
        for kind in ("builtin", "learned"):
            self.metrics.styles.labels(kind).set(sum(1 for s in styles if s.kind == kind))

    @property
    def ready(self) -> bool:
        return self.registry is not None

    def require_registry(self) -> StyleRegistry:
        if self.registry is None:
            reason = f"loading the model failed: {self.load_error}" if self.load_error else "the model is loading"
            raise NotReadyError(f"not ready: {reason}; GET /readyz tells when it is")
        return self.registry

    # -- shared heavy things, loaded on first use ---------------------------------------------------------------

    def loss_network(self) -> Any:
        with self._heavy_lock:
            if self._loss_network is None:
                from model.vgg import load_vgg19

                log.info("loading the VGG-19 loss network (%s)", self.settings.vgg)
                self._loss_network = load_vgg19(self.settings.vgg, device=self.device)
            return self._loss_network

    def content_images(self) -> list[torch.Tensor]:
        with self._heavy_lock:
            if self._content is None:
                self._content = inference.load_content_images(self.settings.content_dir,
                                                              self.settings.learn_image_size)
            return self._content

    # -- jobs ------------------------------------------------------------------------------------------------------

    def submit_slow_stylize(self, content: DecodedImage, style: Image.Image, *, strength: float,
                            preserve_color: bool, fmt: str, init: str = "content") -> Job:
        settings = self.settings
        start_from = self.require_registry().view() if init == "nearest" else None

        def work(ctx: JobContext) -> JobOutcome:
            rendered, blend = inference.slow_stylize_decoded(
                content, style, self.loss_network(), steps=settings.slow_steps,
                time_limit_s=settings.slow_time_limit_s, strength=strength, preserve_color=preserve_color,
                fmt=fmt, progress=ctx.progress, cancel=ctx.cancel, start_from=start_from)
            summary = {"width": rendered.width, "height": rendered.height,
                       "inference_ms": round(rendered.inference_ms, 1)}
            if blend is not None:
                summary["init_blend"] = blend
            return JobOutcome(rendered.data, rendered.media_type, summary)

        params = {"strength": strength, "preserve_color": preserve_color, "format": fmt, "init": init,
                  "width": content.rgb.width, "height": content.rgb.height}
        return self.jobs.submit(SLOW_JOB, work, params)

    def submit_learn_style(self, name: str, style: Image.Image, source_sha256: str) -> Job:
        registry = self.require_registry()
        settings = self.settings
        registry.reserve(name)

        def work(ctx: JobContext) -> JobOutcome:
            learned = inference.learn_new_style(
                registry.snapshot(), style, name, self.loss_network(), self.content_images(),
                steps=settings.learn_steps, batch_size=settings.learn_batch_size,
                image_size=settings.learn_image_size, source_sha256=source_sha256,
                progress=ctx.progress, cancel=ctx.cancel)
            if ctx.cancel.is_set():
                raise CancelledError(f"learning style {name!r} was cancelled")
            registry.commit_learned(name, learned.rows, learned.metadata)
            return JobOutcome(summary={"style": name, "preview_url": f"/v1/styles/{name}/preview"})

        def release(job: Job) -> None:
            registry.release(name)

        try:
            return self.jobs.submit(LEARN_JOB, work, {"name": name, "source_sha256": source_sha256},
                                    on_finish=release)
        except BaseException:
            registry.release(name)
            raise
