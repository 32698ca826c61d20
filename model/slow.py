"""The slow path for unseen styles: optimise the pixels (Gatys, Ecker & Bethge 2016).

The image starts as the content photo (or ``init``) and is optimised against the
Gram targets of the style image and the content features of the photo, with the
same losses the network is trained on (`model.losses`): relative Gram error over
the style layers, relative feature change at the content layer, total variation.

Coarse to fine (Gatys et al. 2017, "Controlling Perceptual Factors"): the first
scales run on a downscaled copy of content *and* style (so brush strokes keep
their size relative to the picture), and each result is upsampled to start the
next scale. Pixels are clamped to [0, 1] after every step. The run is bounded
by a step count and a wall-clock limit, reports a progress fraction, and can be
cancelled from another thread.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from model.errors import CancelledError, InvalidParameterError
from model.losses import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    WeightedTerms,
    gram_matrix,
    style_loss,
    target_grams,
    transfer_objective,
)
from model.vgg import LAYER_ORDER, VGG19Features

OPTIMIZERS = ("lbfgs", "adam")
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


@dataclass(frozen=True)
class SlowConfig:
    """How hard and how long the slow path works; every field is checked."""

    steps: int = 200  # optimisation steps over all scales (split by `scale_steps`)
    time_limit_s: float = 120.0  # hard wall-clock bound; the best image so far is returned
    scales: tuple[float, ...] = (0.5, 1.0)  # increasing, ending at 1.0 (the content size)
    # Relative share of the steps of each scale (None: even). A coarse step costs a fraction of a fine one
    # (pixels: 1/16 at scale 0.25), so a texture spends most of its steps where they are cheap.
    scale_steps: tuple[float, ...] | None = None
    # The training losses and balance (relative Gram error summed over the style
    # layers vs relative feature change at relu4_2). Pixels fit the Gram targets far
    # better than a network does, so style weight 1 (training: 3) already gives a
    # strongly painted image whose objects stay recognisable (content change ~0.4-0.6);
    # pixels also pick up high-frequency noise a network never makes, hence more TV.
    style_weight: float = 1.0
    content_weight: float = 1.0
    tv_weight: float = 2.0
    optimizer: str = "lbfgs"
    lr: float | None = None  # None: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    # L-BFGS keeps two image-sized vectors per remembered step: 10 (scipy's default) costs 63 MB at
    # 512 px where 50 cost 315 MB, and reached the same loss (0.854 vs 0.852 after 100 steps, 256 px).
    lbfgs_history: int = 10
    style_layers: tuple[str, ...] = STYLE_LAYERS
    # Weight of each style layer's relative Gram error (missing layers weigh 1).
    style_layer_weights: dict[str, float] = field(default_factory=dict)
    content_layer: str = CONTENT_LAYER
    min_side: int = 32  # coarse scales whose shorter side would be smaller are skipped
    style_max_side: int | None = 512  # larger style images are downscaled to this longer side first

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidParameterError(f"steps must be an integer >= 1, got {self.steps!r}")
        if not (
            isinstance(self.time_limit_s, int | float) and self.time_limit_s > 0 and math.isfinite(self.time_limit_s)
        ):
            raise InvalidParameterError(f"time_limit_s must be a positive number of seconds, got {self.time_limit_s!r}")
        scales = tuple(self.scales)
        object.__setattr__(self, "scales", scales)
        if not scales or any(not (isinstance(s, int | float) and 0 < s <= 1) for s in scales):
            raise InvalidParameterError(f"scales must be numbers in (0, 1], got {self.scales!r}")
        if any(b <= a for a, b in zip(scales, scales[1:], strict=False)) or scales[-1] != 1:
            raise InvalidParameterError(f"scales must be strictly increasing and end at 1.0, got {self.scales!r}")
        if self.scale_steps is not None:
            shares = tuple(self.scale_steps)
            object.__setattr__(self, "scale_steps", shares)
            if len(shares) != len(scales) or any(
                isinstance(w, bool) or not isinstance(w, int | float) or not (w > 0 and math.isfinite(w))
                for w in shares
            ):
                raise InvalidParameterError(
                    f"scale_steps must be one positive number per scale {scales!r}, got {self.scale_steps!r}"
                )
        for name in ("style_weight", "content_weight", "tv_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise InvalidParameterError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidParameterError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if isinstance(self.lbfgs_history, bool) or not isinstance(self.lbfgs_history, int) or self.lbfgs_history < 1:
            raise InvalidParameterError(f"lbfgs_history must be an integer >= 1, got {self.lbfgs_history!r}")
        if self.lr is not None and not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidParameterError(f"lr must be a positive number, got {self.lr!r}")
        object.__setattr__(self, "style_layers", tuple(self.style_layers))
        for layer in (*self.style_layers, self.content_layer):
            if layer not in LAYER_ORDER:
                raise InvalidParameterError(f"unknown VGG-19 layer {layer!r}")
        if not self.style_layers:
            raise InvalidParameterError("style_layers must name at least one layer")
        layer_weights = dict(self.style_layer_weights)
        if set(layer_weights) - set(self.style_layers):
            raise InvalidParameterError(
                "style_layer_weights names layers outside style_layers: "
                f"{sorted(set(layer_weights) - set(self.style_layers))}"
            )
        if any(not (isinstance(w, int | float) and w >= 0 and math.isfinite(w)) for w in layer_weights.values()):
            raise InvalidParameterError(f"style_layer_weights must be finite numbers >= 0, got {layer_weights!r}")
        object.__setattr__(self, "style_layer_weights", {k: float(v) for k, v in layer_weights.items()})
        if self.min_side < 1:
            raise InvalidParameterError(f"min_side must be >= 1, got {self.min_side!r}")
        if self.style_max_side is not None and self.style_max_side < 16:
            raise InvalidParameterError(f"style_max_side must be >= 16 or None, got {self.style_max_side!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


def _check_image(name: str, image: torch.Tensor) -> None:
    if not torch.is_tensor(image) or image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise InvalidParameterError(f"{name} must be a (1, 3, H, W) tensor, got {shape}")
    if min(image.shape[-2:]) < 16:
        raise InvalidParameterError(f"{name} is {image.shape[-1]}x{image.shape[-2]}; each side must be >= 16 px")


def _resize(image: torch.Tensor, size: tuple[int, int], circular: bool = False) -> torch.Tensor:
    """Bilinear (antialiased) resize; ``circular``: of the image as a torus (resize it tiled 3 x 3 and keep the
    middle tile), so a seamless texture stays seamless from one scale to the next."""
    if tuple(image.shape[-2:]) == size:
        return image
    if circular:
        out_h, out_w = size
        tiled = F.interpolate(image.repeat(1, 1, 3, 3), size=(3 * out_h, 3 * out_w), mode="bilinear", antialias=True)
        return tiled[..., out_h : 2 * out_h, out_w : 2 * out_w].clamp(0, 1)
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _plan(config: SlowConfig, content_size: tuple[int, int]) -> list[tuple[float, int]]:
    """(scale, steps) per stage: scales too small to be useful are dropped, steps split by
    ``config.scale_steps`` (evenly without), at least one each, rounding remainders to the finest."""
    shares = dict(zip(config.scales, config.scale_steps or [1.0] * len(config.scales), strict=True))
    scales = [s for s in config.scales if s == 1 or min(_scaled_size(content_size, s)) >= config.min_side]
    scales = scales[-config.steps :]  # fewer steps than scales: keep the finest
    total = sum(shares[s] for s in scales)
    steps = [max(1, math.floor(config.steps * shares[s] / total)) for s in scales]
    for i in range(config.steps - sum(steps)):  # what flooring left over, finest first
        steps[len(steps) - 1 - i % len(steps)] += 1
    while sum(steps) > config.steps:  # the at-least-one rule overshot: take from the largest
        steps[steps.index(max(steps))] -= 1
    return list(zip(scales, steps, strict=True))


class _Objective:
    """The weighted loss of one scale: targets precomputed, image -> total loss.

    Without ``content`` (texture synthesis) only the Gram and TV terms count; ``circular``
    makes the loss network and the TV term see the image as a torus (a tileable texture), rolled
    by a random offset (from ``seed``) at every evaluation: VGG's max pooling leaves its cell
    boundaries more contrasted than the pixels inside, and on a fixed grid the image's own border
    is a boundary of every pooling level, a seam. The roll moves the grid about the torus.
    """

    def __init__(
        self,
        loss_network: VGG19Features,
        content: torch.Tensor | None,
        style: torch.Tensor,
        config: SlowConfig,
        circular: bool = False,
        seed: int = 0,
    ) -> None:
        self.network, self.config, self.circular = loss_network, config, circular
        self.generator = torch.Generator().manual_seed(seed)
        self.grams = target_grams(loss_network, style, config.style_layers)
        self.content_features = None
        self.layers = tuple(config.style_layers)
        if content is not None:
            self.layers = (*self.layers, config.content_layer)
            with torch.no_grad():
                self.content_features = loss_network(content, (config.content_layer,))[config.content_layer]

    def terms(self, image: torch.Tensor) -> WeightedTerms:
        config = self.config
        if self.circular:
            dy, dx = (int(torch.randint(n, (), generator=self.generator)) for n in image.shape[-2:])
            image = image.roll((dy, dx), dims=(2, 3))
        features = self.network(image, self.layers, circular=self.circular)
        return transfer_objective(
            image,
            {l: gram_matrix(features[l]) for l in config.style_layers},
            self.grams,
            features[config.content_layer] if self.content_features is not None else None,
            self.content_features,
            style_weight=config.style_weight,
            content_weight=config.content_weight,
            tv_weight=config.tv_weight,
            layer_weights=config.style_layer_weights,
            circular=self.circular,
        )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.terms(image).total


class _Budget:
    """Wall clock, step pacing, progress reports and the cancel flag of one run."""

    def __init__(
        self, config: SlowConfig, progress: Callable[[float], None] | None, cancel: threading.Event | None
    ) -> None:
        self.config, self.progress, self.cancel = config, progress, cancel
        self.started = time.monotonic()
        self.reported = 0.0
        self.step_seconds = 0.0  # duration of the last step, rescaled at each new scale
        self.out_of_time = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def report(self, work_fraction: float, count_time: bool = True) -> None:
        """Report max(work done, time used), never going backwards."""
        fraction = max(work_fraction, self.elapsed() / self.config.time_limit_s if count_time else 0.0)
        self.reported = min(1.0, max(self.reported, fraction))
        if self.progress is not None:
            self.progress(self.reported)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("the slow stylization was cancelled")

    def may_step(self, deadline: float | None = None) -> bool:
        """False once the next step (estimated from the last one) would overrun the time limit (then for
        good) or ``deadline`` (seconds from the start: the end of a coarse scale's share of the time)."""
        finish = self.elapsed() + self.step_seconds
        if finish > self.config.time_limit_s:
            self.out_of_time = True
        return not self.out_of_time and (deadline is None or finish <= deadline)


def _optimise_scale(
    objective: _Objective,
    start: torch.Tensor,
    n_steps: int,
    config: SlowConfig,
    budget: _Budget,
    work_done: float,
    work_share: float,
    on_step: Callable[[torch.Tensor], None] | None = None,
    deadline: float | None = None,
) -> torch.Tensor:
    """Run up to ``n_steps`` steps from ``start``, stopping early at ``deadline`` (seconds from the
    start of the run); returns the lowest-loss image seen."""
    pixels = start.clone(memory_format=torch.contiguous_format).requires_grad_(True)
    if config.optimizer == "lbfgs":
        # One iteration per step() keeps the curvature history across steps while
        # letting us check time, cancel and progress between iterations.
        optimizer = torch.optim.LBFGS([pixels], lr=config.learning_rate, max_iter=1, history_size=config.lbfgs_history)
    else:
        optimizer = torch.optim.Adam([pixels], lr=config.learning_rate)
    best_loss, best = math.inf, pixels.detach().clone()
    last_loss = math.inf

    def closure() -> torch.Tensor:
        nonlocal best_loss, best, last_loss
        budget.check_cancel()  # once more right before the expensive forward/backward
        optimizer.zero_grad(set_to_none=True)
        loss = objective(pixels)
        loss.backward()
        pixels.grad = pixels.grad.contiguous()  # L-BFGS flattens it with view()
        last_loss = loss.item()
        if last_loss < best_loss:  # the loss of the pixels before this step's update
            best_loss, best = last_loss, pixels.detach().clone()
        return loss

    for step in range(n_steps):
        budget.check_cancel()
        if not budget.may_step(deadline):
            return best
        step_started = time.monotonic()
        optimizer.step(closure)
        with torch.no_grad():
            pixels.clamp_(0, 1)
        budget.step_seconds = time.monotonic() - step_started
        if not math.isfinite(last_loss):
            return best  # diverged: keep the best image seen before it did
        budget.report(work_done + work_share * (step + 1) / n_steps)
        if on_step is not None:
            on_step(pixels.detach())
    with torch.no_grad():  # the last update has not been scored yet
        if objective(pixels).item() < best_loss:
            best = pixels.detach().clone()
    return best


def slow_stylize(
    content: torch.Tensor,
    style: torch.Tensor,
    loss_network: VGG19Features,
    config: SlowConfig = SlowConfig(),
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    init: torch.Tensor | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Stylize ``content`` (1, 3, H, W in [0, 1]) like ``style`` by optimising its pixels.

    Returns the best image found (lowest loss at the finest scale reached) at the
    content's size, in [0, 1], on the content's device and dtype. ``progress`` gets a
    non-decreasing fraction in [0, 1]: 0.0 at the start, once after every step (the
    larger of the work done, steps weighted by pixel count, and the share of the time
    limit used) and 1.0 at the end. Raises `CancelledError` before the next step once
    ``cancel`` is set. Stops after ``config.steps`` steps or when the next step would
    overrun ``config.time_limit_s``. ``on_step`` (benchmarks) sees the pixels after
    every step, at the current scale.
    """
    _check_image("content", content)
    _check_image("style", style)
    if init is not None and (not torch.is_tensor(init) or init.shape != content.shape):
        shape = tuple(init.shape) if torch.is_tensor(init) else type(init).__name__
        raise InvalidParameterError(f"init must have the content's shape {tuple(content.shape)}, got {shape}")
    budget = _Budget(config, progress, cancel)
    out_device, out_dtype = content.device, content.dtype
    device = next(loss_network.parameters()).device
    full_size = tuple(content.shape[-2:])
    content = content.detach().to(device=device, dtype=torch.float32).clamp(0, 1)
    style = _prepare_style(style, device, config)
    image = (init if init is not None else content).detach().to(device=device, dtype=torch.float32).clamp(0, 1)

    return _coarse_to_fine(
        full_size,
        image,
        style,
        config,
        budget,
        lambda size, scaled_style: _Objective(loss_network, _resize(content, size), scaled_style, config),
        on_step,
    ).to(device=out_device, dtype=out_dtype)


def _prepare_style(style: torch.Tensor, device: torch.device, config: SlowConfig) -> torch.Tensor:
    style = style.detach().to(device=device, dtype=torch.float32).clamp(0, 1)
    if config.style_max_side is not None and max(style.shape[-2:]) > config.style_max_side:
        shrink = config.style_max_side / max(style.shape[-2:])
        style = _resize(style, _scaled_size(tuple(style.shape[-2:]), shrink))
    return style


def _coarse_to_fine(
    full_size: tuple[int, int],
    image: torch.Tensor,
    style: torch.Tensor,
    config: SlowConfig,
    budget: _Budget,
    make_objective: Callable[[tuple[int, int], torch.Tensor], _Objective],
    on_step: Callable[[torch.Tensor], None] | None,
    circular: bool = False,
) -> torch.Tensor:
    """Optimise ``image`` scale by scale (`_plan`); each scale's objective comes from
    ``make_objective(size, style scaled alike)``, and its result, upsampled (as a torus if
    ``circular``), starts the next.

    Each scale but the last stops once it has used its share of the time limit (its share of the
    work, steps times pixels, plus what earlier scales left unused): on a slow or busy machine the
    time limit then falls in the finest scale, never in a coarse one (whose result, upsampled, is a
    blurred image)."""
    plan = _plan(config, full_size)
    work = [steps * math.prod(_scaled_size(full_size, s)) for s, steps in plan]
    shares = [w / sum(work) for w in work]
    budget.report(0.0, count_time=False)
    work_done, pixels_before = 0.0, None
    for index, ((scale, n_steps), share) in enumerate(zip(plan, shares, strict=True)):
        budget.check_cancel()
        size = _scaled_size(full_size, scale)
        if pixels_before is not None:  # a step costs about in proportion to the pixels
            budget.step_seconds *= math.prod(size) / pixels_before
        pixels_before = math.prod(size)
        objective = make_objective(size, _resize(style, _scaled_size(tuple(style.shape[-2:]), scale)))
        start = _resize(image, size, circular)
        deadline = (work_done + share) * config.time_limit_s if index < len(plan) - 1 else None
        image = _optimise_scale(objective, start, n_steps, config, budget, work_done, share, on_step, deadline)
        work_done += share
        if budget.out_of_time:
            break
    budget.check_cancel()
    result = _resize(image, full_size, circular).clamp(0, 1)
    budget.report(1.0)
    return result


# -- texture synthesis: the Gram method on its own (Gatys, Ecker & Bethge 2015, "Texture Synthesis Using CNNs") ------

TEXTURE_LAYERS: tuple[str, ...] = STYLE_LAYERS  # `deepest` picks a prefix: relu1_1 .. relu5_1
# From noise there is no photo to hold the layout, so for the deep layer sets the coarse scales do the work of
# placing the large structures (the deep layers' receptive fields cover more of a small image) and the fine
# scale adds detail. Most steps go to the cheap coarse scales (a step at 0.25 costs ~1/10 of one at 1.0):
# at 256 px, 200 steps split evenly ran out of time (120 s, two busy cores) halfway through the 0.5 scale
# and left a blurred, upsampled relu5_1 texture at 0.71 of the noise's Gram loss; split 100/60/40 it reached
# 0.02 in 56 s (docs/textures.md). Shallow layers match small patches only: upsampling a coarse result leaves
# blocks they cannot refine, so they run at the full size alone.
TEXTURE_SCALES: tuple[float, ...] = (0.25, 0.5, 1.0)
TEXTURE_SCALE_STEPS: tuple[float, ...] = (0.5, 0.3, 0.2)
COARSE_TO_FINE_FROM = "relu4_1"  # the shallowest deepest layer that is synthesized coarse to fine
# Total variation stays at the slow path's 2.0: at 0.5 the 256 px textures came out a little sharper (relu5_1:
# 0.018 vs 0.020 of the noise's Gram loss), but L-BFGS (no line search) lost its way on a 48 x 32 relu3_1 texture
# of stripes (0.75 of the noise's loss after 30 steps; at 2.0: 0.04; tests/app/test_service_textures.py).


def texture_layers(deepest: str) -> tuple[str, ...]:
    """The Gram layers of a texture whose deepest matched layer is ``deepest``: relu1_1 up to it."""
    if deepest not in TEXTURE_LAYERS:
        raise InvalidParameterError(f"unknown texture layer {deepest!r}; choose one of {', '.join(TEXTURE_LAYERS)}")
    return TEXTURE_LAYERS[: TEXTURE_LAYERS.index(deepest) + 1]


def texture_config(deepest: str = "relu5_1", **overrides) -> SlowConfig:
    """The slow path's config for texture synthesis: Gram layers relu1_1..``deepest``, no content term,
    coarse to fine (`TEXTURE_SCALES`, most steps coarse) from relu4_1 on, a single scale below."""
    layers = texture_layers(deepest)
    deep = len(layers) > TEXTURE_LAYERS.index(COARSE_TO_FINE_FROM)
    scales = {"scales": TEXTURE_SCALES, "scale_steps": TEXTURE_SCALE_STEPS} if deep else {"scales": (1.0,)}
    if "scales" in overrides and "scale_steps" not in overrides:
        scales = {}  # other scales: split evenly unless told
    values = {"style_layers": layers, "content_weight": 0.0, **scales, **overrides}
    return SlowConfig(**values)


def texture_noise(style: torch.Tensor, size: tuple[int, int], seed: int) -> torch.Tensor:
    """The starting point of a texture: (1, 3, H, W) uniform noise within +-0.1 of the painting's mean
    colour, the same for the same seed. (From full-range noise L-BFGS needs many more steps to leave
    its first plateau: 30 steps on a striped painting left 84 % of the Gram error, this start 4 %.)"""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand((1, 3, *size), generator=generator).to(style.device)
    return (style.mean(dim=(2, 3), keepdim=True) + 0.2 * (noise - 0.5)).clamp(0, 1)


def synthesize_texture(
    style: torch.Tensor,
    size: tuple[int, int],
    loss_network: VGG19Features,
    config: SlowConfig | None = None,
    *,
    tileable: bool = False,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    on_step: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """A new texture of ``size`` (height, width) with the look of ``style`` (1, 3, h, w in [0, 1]).

    The slow path's optimiser with no photo: pixels start from `texture_noise` (``seed``) and
    are fitted to the Gram matrices of ``config.style_layers`` (default `texture_config()`:
    relu1_1..relu5_1), coarse to fine, with the same budget, progress and cancel as
    `slow_stylize`. ``tileable``: every convolution of the loss network pads by wrapping
    around and total variation counts the last row/column as neighbours of the first, so the
    optimised image is a torus to the loss and repeats without a seam. Returns (1, 3, H, W)
    in [0, 1] on the style's device and dtype.
    """
    config = config if config is not None else texture_config()
    _check_image("style", style)
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 16 for v in size)
    ):
        raise InvalidParameterError(f"size must be (height, width) integers >= 16, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidParameterError(f"seed must be an integer, got {seed!r}")
    budget = _Budget(config, progress, cancel)
    out_device, out_dtype = style.device, style.dtype
    device = next(loss_network.parameters()).device
    full_size = (int(size[0]), int(size[1]))
    style = _prepare_style(style, device, config)
    return _coarse_to_fine(
        full_size,
        texture_noise(style, full_size, seed),
        style,
        config,
        budget,
        lambda _size, scaled_style: _Objective(loss_network, None, scaled_style, config, tileable, seed),
        on_step,
        circular=tileable,
    ).to(device=out_device, dtype=out_dtype)


def gram_style_loss(
    loss_network: VGG19Features, image: torch.Tensor, style: torch.Tensor, layers: tuple[str, ...] = STYLE_LAYERS
) -> float:
    """Relative Gram error of ``image`` against ``style`` summed over ``layers`` (the objective's style term
    at weight 1): how far a texture is from its painting."""
    grams = target_grams(loss_network, style, layers)
    with torch.no_grad():
        features = loss_network(image, tuple(layers))
    return style_loss({l: gram_matrix(features[l]) for l in layers}, grams, relative=True).item()


def seam_contrast(image: torch.Tensor) -> dict[str, float]:
    """How visible the seams are when ``image`` (B, 3, H, W) is tiled 2 x 2.

    ``border``: the mean absolute difference between the pixels that meet across the tile borders
    (last column | first column, last row | first row). ``inner``: the same for the image's own
    neighbouring pixels in the same phase of the 2 x 2 pooling grid (pairs (i, i+1) with i of the
    parity of the last index): VGG's max pooling leaves pairs that straddle a pooling cell
    more different than pairs inside one, and the tile border always straddles one. ``ratio``:
    border / inner, about 1 for no seam, well above 1 for a visible edge.
    """
    image = image.detach().float()
    tiled = image.repeat(1, 1, 2, 2)
    h, w = image.shape[-2:]
    across_columns = (tiled[..., :, 1:] - tiled[..., :, :-1]).abs().mean(dim=(0, 1, 2))  # pair (c, c+1)
    across_rows = (tiled[..., 1:, :] - tiled[..., :-1, :]).abs().mean(dim=(0, 1, 3))
    border = (across_columns[w - 1] * h + across_rows[h - 1] * w) / (h + w)
    same_phase_columns = across_columns[(w - 1) % 2 : w - 1 : 2]
    same_phase_rows = across_rows[(h - 1) % 2 : h - 1 : 2]
    inner = (same_phase_columns.mean() * h + same_phase_rows.mean() * w) / (h + w)
    return {"border": border.item(), "inner": inner.item(), "ratio": (border / inner.clamp_min(1e-12)).item()}
