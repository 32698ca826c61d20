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
from typing import Any

import anyio
import anyio.to_thread
import torch
from PIL import Image

from app import inference
from app.concurrency import InferenceGate
from app.errors import NotReadyError
from app.jobs import Job, JobContext, JobManager, JobOutcome, Reservation
from app.live_bank import LiveBank
from app.metrics import Metrics
from app.previews import PreviewCache
from app.settings import Settings
from app.style_store import LearnedStyle, LocalStyleStore
from model.bank import StyleBank, load_bank
from model.errors import BankFormatError, CancelledError
from model.imageio import DecodedImage
from model.runner import Runner, make_runner
from model.transformer import TransformerNet

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
        self.store = LocalStyleStore(settings.styles_dir)
        self.jobs = JobManager(settings.jobs_dir, settings.queue_size, settings.job_workers, settings.result_ttl_s,
                               metrics, reconcile=self._reconcile)
        # Uploads for jobs are decoded here, a few at a time, so a burst cannot decode them all at once.
        self.codec_limiter = anyio.CapacityLimiter(settings.resolved_codec_workers())
        self.previews = PreviewCache()
        self.registry: LiveBank | None = None
        self.load_error: str | None = None
        self.started_at = time.time()
        self._task_group: Any = None
        self._heavy_lock = threading.Lock()
        self._loss_network: Any = None
        self._content: list[torch.Tensor] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self, bank: StyleBank | None = None) -> None:
        self.store.prepare()
        if self.device == "cpu" and bank is None:
            torch.set_num_threads(self.settings.torch_threads or max(1, (os.cpu_count() or 1) // self.concurrency))
        self.jobs.start()
        if bank is not None:  # handed in (tests): ready before the first request
            await anyio.to_thread.run_sync(self._install, bank)
        else:
            self._load_thread = threading.Thread(target=self._load, name="cinstyle-load-bank", daemon=True)
            self._load_thread.start()

    async def stop(self) -> None:
        await anyio.to_thread.run_sync(self.jobs.stop)

    def _load(self) -> None:
        """Load the checkpoint and build the first snapshot (a thread of its own: the loop stays free)."""
        settings = self.settings
        log.info("loading the style bank %s onto %s", settings.checkpoint, self.device)
        # Failures are reported by /readyz and the process stays up for diagnosis. The log has the
        # whole story (paths included); clients learn only which stage failed.
        try:
            bank = load_bank(settings.checkpoint, device=self.device)
        except Exception as exc:  # noqa: BLE001
            self.load_error = ("the checkpoint is not a valid cinstyle bank" if isinstance(exc, BankFormatError)
                               else f"reading the checkpoint raised {type(exc).__name__}")
            log.exception("could not load the style bank %s", settings.checkpoint)
            return
        try:
            self._install(bank)
        except Exception as exc:  # noqa: BLE001
            self.load_error = f"preparing the {self.backend} backend raised {type(exc).__name__}"
            log.exception("could not prepare the style bank for serving with the %s backend", self.backend)

    def _install(self, bank: StyleBank) -> None:
        if self.settings.fp16 and self.device == "cuda":
            bank.network.half()
        bank.network.to(self.device)
        registry = LiveBank(bank, self.store, self._make_runner)  # the onnx export happens here
        registry.listeners.append(self.previews.invalidate_all)
        registry.listeners.append(lambda _names: self._count_styles())
        self.registry = registry
        self._count_styles()
        log.info("ready: %d styles on %s, backend %s, %d inference slot(s)", len(registry.styles()), self.device,
                 self.backend, self.concurrency)

    def _make_runner(self, network: TransformerNet) -> Runner:
        return make_runner(network, self.backend, threads=torch.get_num_threads())

    def _count_styles(self) -> None:
        if self.registry is None:
            return
        styles = self.registry.styles()
        for kind in ("builtin", "learned"):
            self.metrics.styles.labels(kind).set(sum(1 for s in styles if s.kind == kind))

    @property
    def ready(self) -> bool:
        return self.registry is not None

    def require_registry(self) -> LiveBank:
        if self.registry is None:
            reason = (f"loading the model failed: {self.load_error}; the server log says which file and why"
                      if self.load_error else "the model is loading")
            raise NotReadyError(f"not ready: {reason}; GET /readyz tells when it is")
        return self.registry

    async def decode(self, data: bytes, max_side: int) -> DecodedImage:
        """Decode an upload in the bounded codec pool (refused before decoding if over max_pixels)."""
        return await anyio.to_thread.run_sync(inference.decode_upload, data, self.settings.max_pixels, max_side,
                                              limiter=self.codec_limiter)

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
                            preserve_color: bool, fmt: str, init: str = "content",
                            reservation: Reservation | None = None) -> Job:
        settings = self.settings
        start_from = self.require_registry().view() if init == "nearest" else None

        def work(ctx: JobContext) -> JobOutcome:
            rendered, blend = inference.slow_stylize_decoded(
                content, style, self.loss_network(), steps=settings.slow_steps,
                time_limit_s=settings.slow_time_limit_s, strength=strength, preserve_color=preserve_color,
                fmt=fmt, progress=ctx.progress, cancel=ctx.cancel,
                start_from=(start_from.runner, start_from.names) if start_from is not None else None)
            summary = {"width": rendered.width, "height": rendered.height,
                       "inference_ms": round(rendered.inference_ms, 1)}
            if blend is not None:
                summary["init_blend"] = blend
            return JobOutcome(rendered.data, rendered.media_type, summary)

        params = {"strength": strength, "preserve_color": preserve_color, "format": fmt, "init": init,
                  "width": content.rgb.width, "height": content.rgb.height}
        return self.jobs.submit(SLOW_JOB, work, params, reservation=reservation)

    def submit_learn_style(self, name: str, style: Image.Image, source_sha256: str,
                           reservation: Reservation | None = None) -> Job:
        registry = self.require_registry()
        settings = self.settings
        registry.reserve(name)

        def work(ctx: JobContext) -> JobOutcome:
            learned = inference.learn_new_style(
                registry.view().bank, style, name, self.loss_network(), self.content_images(),
                steps=settings.learn_steps, batch_size=settings.learn_batch_size,
                image_size=settings.learn_image_size, source_sha256=source_sha256,
                progress=ctx.progress, cancel=ctx.cancel)
            if ctx.cancel.is_set():
                raise CancelledError(f"learning style {name!r} was cancelled")
            # The job id goes into the stored style, so a restart can tell its job reached the commit.
            registry.commit_learned(LearnedStyle(name, learned.rows, registry.fingerprint,
                                                 {**learned.metadata, "job_id": ctx.job.id}))
            return learned_summary(name)

        def release(job: Job) -> None:
            registry.release(name)

        try:
            return self.jobs.submit(LEARN_JOB, work, {"name": name, "source_sha256": source_sha256},
                                    on_finish=release, reservation=reservation)
        except BaseException:
            registry.release(name)
            raise

    def _reconcile(self, job: Job) -> JobOutcome | None:
        """A learn job interrupted after its style was stored did finish: report it done."""
        name = job.params.get("name")
        if job.kind == LEARN_JOB and isinstance(name, str) and self.store.job_of(name) == job.id:
            return learned_summary(name)
        return None


def learned_summary(name: str) -> JobOutcome:
    return JobOutcome(summary={"style": name, "preview_url": f"/v1/styles/{name}/preview"})
