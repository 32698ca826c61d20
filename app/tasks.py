"""The jobs themselves: plain functions of their inputs, run the same way by both job queues.

A job is ``(kind, images, params)``: the images are decoded and checked by the API
before the job exists (so a bad upload is a 4xx, never a failed job), and the
params are JSON. `run_job` runs one with a `JobEnv` (what the process running
it provides: the loss network, the bank to learn against, where learned styles
go) and a `JobContext` (progress and cancel). The in-process queue
(`app.jobs.JobManager`) and the Redis one (`app.fleet`) call the same function.
"""

import io
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
from PIL import Image

from app import inference
from app.jobs import JobContext, JobOutcome
from app.style_store import LearnedStyle
from model.bank import StyleBank
from model.errors import CancelledError, InvalidParameterError
from model.imageio import DecodedImage, thumbnail_jpeg
from model.runner import Runner

log = logging.getLogger(__name__)

SLOW_JOB, LEARN_JOB, TEXTURE_JOB = "stylize", "learn_style", "texture"
JOB_KINDS = (SLOW_JOB, LEARN_JOB, TEXTURE_JOB)
JobImages = dict[str, Image.Image]  # "content" (+ "content_alpha"), "style"


class JobEnv(Protocol):
    """What a process that runs jobs provides (the API process in embedded mode, `cinstyle worker` in a fleet)."""

    settings: Any  # app.settings.Settings

    def loss_network(self) -> Any: ...

    def content_images(self) -> list[torch.Tensor]: ...

    def learning_bank(self) -> StyleBank:
        """The bank new styles are fitted to (its convolutions and loss weights)."""
        ...

    def nearest_runner(self) -> tuple[Runner, tuple[str, ...]]:
        """A runner of the current bank and its style names (the slow path's ``init=nearest``)."""
        ...

    def commit_learned(self, style: LearnedStyle) -> None:
        """Store a learned style durably where every replica finds it (`ConflictError` if the name is taken)."""
        ...


class HeavyResources:
    """The VGG-19 loss network and the content photos for learning: loaded once, on the first job that needs them."""

    def __init__(self, settings: Any, device: str) -> None:
        self.settings, self.device = settings, device
        self._lock = threading.Lock()
        self._loss_network: Any = None
        self._content: list[torch.Tensor] | None = None

    def loss_network(self) -> Any:
        with self._lock:
            if self._loss_network is None:
                from model.vgg import load_vgg19

                log.info("loading the VGG-19 loss network (%s)", self.settings.vgg)
                self._loss_network = load_vgg19(self.settings.vgg, device=self.device)
            return self._loss_network

    def content_images(self) -> list[torch.Tensor]:
        with self._lock:
            if self._content is None:
                self._content = inference.load_content_images(self.settings.content_dir, self.settings.learn_image_size)
            return self._content


def warm_job_imports() -> None:
    """Import what jobs need before the service is ready (call it in a worker thread).

    Importing training.add_style pulls in torchvision and torch._dynamo, whose module set-up holds
    the GIL for about 200 ms in one piece: done by the first learn job, that stalls the event loop
    of a serving process. It costs about 160 MB of resident memory, once."""
    import model.nearest  # noqa: F401
    import model.slow  # noqa: F401
    import training.add_style  # noqa: F401


def slow_images(content: DecodedImage, style: Image.Image) -> JobImages:
    images = {"content": content.rgb, "style": style}
    if content.alpha is not None:
        images["content_alpha"] = content.alpha
    return images


def _slow_stylize(env: JobEnv, images: JobImages, params: dict[str, Any], ctx: JobContext) -> JobOutcome:
    settings = env.settings
    content = DecodedImage(rgb=images["content"], alpha=images.get("content_alpha"), source_format=None)
    rendered, blend = inference.slow_stylize_decoded(
        content,
        images["style"],
        env.loss_network(),
        steps=settings.slow_steps,
        time_limit_s=settings.slow_time_limit_s,
        strength=params["strength"],
        preserve_color=params["preserve_color"],
        fmt=params["format"],
        progress=ctx.progress,
        cancel=ctx.cancel,
        start_from=env.nearest_runner() if params.get("init") == "nearest" else None,
    )
    summary: dict[str, Any] = {
        "width": rendered.width,
        "height": rendered.height,
        "inference_ms": round(rendered.inference_ms, 1),
    }
    if blend is not None:
        summary["init_blend"] = blend
    return JobOutcome(rendered.data, rendered.media_type, summary)


def _synthesize_texture(env: JobEnv, images: JobImages, params: dict[str, Any], ctx: JobContext) -> JobOutcome:
    """A texture from the painting alone: the slow path's optimiser and budget, starting from noise."""
    settings = env.settings
    rendered = inference.synthesize_texture_image(
        images["style"],
        env.loss_network(),
        width=params["width"],
        height=params["height"],
        layers=params["layers"],
        tileable=params["tileable"],
        seed=params["seed"],
        steps=settings.slow_steps,
        time_limit_s=settings.slow_time_limit_s,
        fmt=params["format"],
        progress=ctx.progress,
        cancel=ctx.cancel,
    )
    summary = {"width": rendered.width, "height": rendered.height, "inference_ms": round(rendered.inference_ms, 1)}
    return JobOutcome(rendered.data, rendered.media_type, summary)


def _learn_style(env: JobEnv, images: JobImages, params: dict[str, Any], ctx: JobContext) -> JobOutcome:
    settings, name = env.settings, params["name"]
    bank = env.learning_bank()
    learned = inference.learn_new_style(
        bank,
        images["style"],
        name,
        env.loss_network(),
        env.content_images(),
        steps=settings.learn_steps,
        batch_size=settings.learn_batch_size,
        image_size=settings.learn_image_size,
        source_sha256=params["source_sha256"],
        progress=ctx.progress,
        cancel=ctx.cancel,
    )
    if ctx.cancel.is_set():
        raise CancelledError(f"learning style {name!r} was cancelled")
    # The job id goes into the stored style, so a restart can tell that this job reached its commit.
    metadata = {**learned.metadata, "job_id": ctx.job.id}
    env.commit_learned(LearnedStyle(name, learned.rows, bank.fingerprint, metadata, thumbnail_jpeg(images["style"])))
    return learned_summary(name)


def learned_summary(name: str) -> JobOutcome:
    return JobOutcome(summary={"style": name, "preview_url": f"/v1/styles/{name}/preview"})


JOB_FUNCTIONS: dict[str, Callable[[JobEnv, JobImages, dict[str, Any], JobContext], JobOutcome]] = {
    SLOW_JOB: _slow_stylize,
    LEARN_JOB: _learn_style,
    TEXTURE_JOB: _synthesize_texture,
}


def run_job(env: JobEnv, kind: str, images: JobImages, params: dict[str, Any], ctx: JobContext) -> JobOutcome:
    if kind not in JOB_FUNCTIONS:
        raise InvalidParameterError(f"unknown job kind {kind!r}")
    return JOB_FUNCTIONS[kind](env, images, params, ctx)


# -- images across a process boundary (the Redis queue): lossless PNG, decoded with a pixel limit ---------------------


def pack_images(images: JobImages) -> dict[str, bytes]:
    packed = {}
    for key, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)
        packed[key] = buffer.getvalue()
    return packed


def unpack_images(packed: dict[str, bytes], max_pixels: int) -> JobImages:
    images = {}
    for key, data in packed.items():
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        if image.width * image.height > max_pixels:
            raise InvalidParameterError(f"job image {key} is {image.width}x{image.height}, over the pixel limit")
        image.load()
        images[key] = image
    return images
