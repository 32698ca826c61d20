"""Learn one new style into an existing bank (Dumoulin et al. 2017, Section 4.2).

Every convolution stays frozen; only a new gamma/beta row per normalization layer
is fitted, starting from the mean of the bank's rows, with the training losses
and weights (`training.objective.transfer_loss`). The bank itself is never
modified: the result is the new rows, in the format of `model.bank.style_rows`,
which `model.bank.save_learned_style` writes and `load_bank(learned_dir=...)`
merges.
"""

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from model.bank import StyleBank, style_rows, validate_style_name
from model.errors import CancelledError, InvalidParameterError
from model.imageio import downscale_tensor
from model.losses import CONTENT_LAYER, STYLE_LAYERS, target_grams
from model.transformer import TransformerConfig, TransformerNet
from model.vgg import VGG19Features
from training.config import LossWeights
from training.data import ContentCrops, check_resize_range
from training.objective import transfer_loss
from training.train import step_generator

log = logging.getLogger(__name__)

DEFAULT_LEARNED_DIR = Path("learned")


INIT_CHOICES = ("nearest", "mean")


@dataclass(frozen=True)
class AddStyleConfig:
    # One 256 px whole-scene crop per step, 100 steps at lr 3e-2: on the hardest paintings a better match than
    # 200 steps of four 128 px crops at 1e-2, in less than half the time (benchmarks/results/learned_styles*.json).
    steps: int = 100
    batch_size: int = 1
    image_size: int = 256  # square content crop side
    resize_range: tuple[int, int] | None = None  # photos' shorter side before cropping, as TrainConfig's
    style_size: int = 512  # longer side of the style image for the Gram targets (downscaled only)
    # Only 2 x (sum of norm widths) numbers are fitted, so a far larger step than training's 1e-3 is safe
    # (3e-2 reaches in 100 steps what 1e-2 did in 200; 6e-2 was no better).
    lr: float = 3e-2
    loss_weights: LossWeights = field(default_factory=LossWeights)
    style_layers: tuple[str, ...] = STYLE_LAYERS
    content_layer: str = CONTENT_LAYER
    seed: int = 0
    # Where the new row starts: "nearest" = the bank style whose output is already closest
    # to the painting (by the same objective, on a few crops); "mean" = the average row.
    init: str = "nearest"

    def __post_init__(self) -> None:
        if self.init not in INIT_CHOICES:
            raise ValueError(f"init must be one of {', '.join(INIT_CHOICES)}, got {self.init!r}")
        for name in ("steps", "batch_size", "image_size", "style_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        object.__setattr__(self, "resize_range", check_resize_range(self.image_size, self.resize_range))
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not isinstance(self.loss_weights, LossWeights):
            object.__setattr__(self, "loss_weights", LossWeights(**self.loss_weights))
        object.__setattr__(self, "style_layers", tuple(self.style_layers))

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "style_layers": list(self.style_layers),
            "resize_range": list(self.resize_range) if self.resize_range else None,
        }


def mean_rows(network: TransformerNet) -> dict[str, torch.Tensor]:
    """The average of every style's gamma/beta row: a neutral starting point."""
    return {
        f"{name}.{part}": getattr(module, part).detach().mean(dim=0).clone()
        for name, module in network.named_modules()
        if hasattr(module, "gamma") and module is not network
        for part in ("gamma", "beta")
    }


def bank_rows(network: TransformerNet, index: int) -> dict[str, torch.Tensor]:
    """Style ``index``'s gamma/beta row of every normalization layer (keys as `mean_rows`)."""
    return {
        f"{name}.{part}": getattr(module, part).detach()[index].clone()
        for name, module in network.named_modules()
        if hasattr(module, "gamma") and module is not network
        for part in ("gamma", "beta")
    }


@torch.no_grad()
def nearest_style_index(
    network: TransformerNet,
    loss_network: VGG19Features,
    content: torch.Tensor,
    grams: dict[str, torch.Tensor],
    config: "AddStyleConfig",
) -> tuple[int, list[float]]:
    """The bank style whose output on ``content`` (a batch of crops) scores lowest against
    the painting's ``grams`` under the add-style objective; and every style's score.

    A row that already gives roughly the painting's palette and strokes needs fewer
    steps than the average row, whose output is a muddy mix of every style's colours."""
    n_styles = network.config.n_styles
    scores = []
    for index in range(n_styles):
        weights = torch.nn.functional.one_hot(torch.tensor([index] * len(content)), n_styles).float()
        output = network(content, weights.to(content.device))
        _, terms = transfer_loss(
            loss_network, output, content, grams, config.loss_weights, config.style_layers, config.content_layer
        )
        scores.append(terms["total"])
    return min(range(n_styles), key=scores.__getitem__), scores


def _single_style_network(network: TransformerNet, rows: dict[str, torch.Tensor]) -> TransformerNet:
    """A copy of ``network``'s convolutions with one style row (``rows``); only the rows train."""
    config = TransformerConfig.from_dict({**network.config.to_dict(), "n_styles": 1})
    single = TransformerNet(config).to(next(network.parameters()).device)
    state = {
        key: (rows[key].unsqueeze(0) if key in rows else value).detach().clone()
        for key, value in network.state_dict().items()
    }
    single.load_state_dict(state)
    for name, parameter in single.named_parameters():
        parameter.requires_grad_(name.endswith((".gamma", ".beta")))
    return single


def learn_style(
    bank: StyleBank,
    style: torch.Tensor,
    name: str,
    loss_network: VGG19Features,
    content: list[torch.Tensor],
    config: AddStyleConfig = AddStyleConfig(),
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, torch.Tensor]:
    """Fit a new gamma/beta row for ``style`` (1, 3, H, W in [0, 1]) on crops of ``content``.

    ``content`` holds (3, H, W) uint8 photos (`training.data.load_images`). Returns
    the rows keyed like `model.bank.style_rows` ('<layer>.gamma' / '<layer>.beta',
    1-D, on the CPU); ``bank`` is left untouched. ``progress`` gets a non-decreasing
    fraction after every step (1.0 at the end); `CancelledError` is raised before the
    next step once ``cancel`` is set. Deterministic for a given ``config.seed``.
    """
    validate_style_name(name)
    if name in bank.style_names:
        raise InvalidParameterError(f"style {name!r} is already in the bank; pick another name")
    if not torch.is_tensor(style) or style.dim() != 4 or style.shape[:2] != (1, 3) or min(style.shape[-2:]) < 16:
        shape = tuple(style.shape) if torch.is_tensor(style) else type(style).__name__
        raise InvalidParameterError(f"style must be a (1, 3, H, W) tensor with sides >= 16 px, got {shape}")
    if not content:
        raise InvalidParameterError("at least one content photo is needed to learn a style")

    device = next(bank.network.parameters()).device
    layers = tuple(config.style_layers)
    style = downscale_tensor(style.detach().to(device=device, dtype=torch.float32).clamp(0, 1), config.style_size)
    grams = target_grams(loss_network, style, layers)
    crops = ContentCrops(content, config.image_size, config.resize_range)
    if config.init == "nearest":
        # Scored on crops the steps below never draw (another seed stream), so the choice does not overfit them.
        probe = crops.batch(config.batch_size, step_generator(config.seed, 1, 0)).to(device)
        index, _ = nearest_style_index(bank.network, loss_network, probe, grams, config)
        start_rows = bank_rows(bank.network, index)
        log.info("add-style %s starts from the nearest bank style %s", name, bank.style_names[index])
    else:
        start_rows = mean_rows(bank.network)
    network = _single_style_network(bank.network, start_rows)
    network.train()
    optimizer = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=config.lr)
    style_weights = torch.ones(config.batch_size, 1, device=device)

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise CancelledError(f"learning style {name!r} was cancelled")

    if progress is not None:
        progress(0.0)
    for step in range(config.steps):
        check_cancel()
        batch = crops.batch(config.batch_size, step_generator(config.seed, 0, step)).to(device)
        output = network(batch, style_weights)
        loss, terms = transfer_loss(
            loss_network, output, batch, grams, config.loss_weights, layers, config.content_layer
        )
        if not math.isfinite(terms["total"]):
            raise FloatingPointError(f"the loss became non-finite at step {step} while learning {name!r}: {terms}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == config.steps - 1:
            log.debug("add-style %s step %d: %s", name, step + 1, terms)
        if progress is not None:
            progress((step + 1) / config.steps)
    check_cancel()
    return {key: value.cpu() for key, value in style_rows(network, 0).items()}


def learned_style_metadata(source_sha256: str, config: AddStyleConfig, **extra: Any) -> dict[str, Any]:
    """The per-style metadata a learned-style file carries (same keys as a trained bank's styles)."""
    weights = config.loss_weights
    return {
        "source_sha256": source_sha256,
        "training_steps": config.steps,
        "loss_weights": weights.to_dict(),
        "resize_range": list(config.resize_range) if config.resize_range else None,
        "learned_with": "cinstyle add-style",
        "add_style_config": config.to_dict(),
        **extra,
    }


def bank_loss_weights(bank: StyleBank) -> LossWeights:
    """The loss weights the bank was trained with (from its style metadata), else the defaults."""
    for info in bank.styles:
        recorded = info.metadata.get("loss_weights")
        if isinstance(recorded, dict):
            try:
                return LossWeights.from_dict(recorded)
            except (TypeError, ValueError):
                break
    return LossWeights()


def bank_resize_range(bank: StyleBank, image_size: int) -> tuple[int, int] | None:
    """The photo scale the bank was trained at (style metadata), if usable with ``image_size`` crops.

    A new style learned at the bank's scale is scored by the same yardstick as its
    trained styles; an older bank without the record gets whole-scene crops."""
    for info in bank.styles:
        recorded = info.metadata.get("resize_range")
        if recorded is not None:
            try:
                return check_resize_range(image_size, recorded)
            except (TypeError, ValueError):
                return None
    return None


# scikit-image's bundled sample photos that are public domain or CC0 (see skimage.data docstrings).
DEFAULT_CONTENT_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera")


def default_content_images(
    names: tuple[str, ...] = DEFAULT_CONTENT_PHOTOS, max_side: int | None = 512
) -> list[torch.Tensor]:
    """Content photos for add-style when the user gives none: (3, H, W) uint8 tensors."""
    from skimage import data

    images = []
    for photo in names:
        array = getattr(data, photo)()
        tensor = torch.from_numpy(array.copy())
        tensor = tensor.unsqueeze(0).expand(3, -1, -1) if tensor.dim() == 2 else tensor.permute(2, 0, 1)[:3]
        if max_side is not None and max(tensor.shape[-2:]) > max_side:
            scale = max_side / max(tensor.shape[-2:])
            size = [max(1, round(s * scale)) for s in tensor.shape[-2:]]
            tensor = (
                F.interpolate(
                    tensor.unsqueeze(0).float(), size=size, mode="bilinear", align_corners=False, antialias=True
                )[0]
                .round()
                .clamp(0, 255)
            )
        images.append(tensor.to(torch.uint8).contiguous())
    return images


def add_style_cli(args) -> int:
    """``cinstyle add-style``: learn --style as --name into --bank, write a learned-style file."""
    from tqdm import tqdm

    from model.bank import load_bank, save_learned_style, sha256_file
    from model.errors import CinstyleError
    from model.imageio import image_to_tensor, load_image_file, thumbnail_jpeg
    from model.vgg import load_vgg19
    from training.data import list_content_images, load_images, photo_load_side
    from training.distributed import resolve_device

    name = validate_style_name(args.name)
    if not args.style.is_file():
        raise CinstyleError(f"style image {args.style} not found")
    device = resolve_device(args.device)
    bank = load_bank(args.bank, device=device)
    if name in bank.style_names:
        raise CinstyleError(f"style {name!r} is already in the bank {bank.path}; pick another --name")
    values: dict[str, Any] = {
        "loss_weights": bank_loss_weights(bank),
        "resize_range": bank_resize_range(bank, AddStyleConfig.image_size),
    }
    if args.steps is not None:
        values["steps"] = args.steps
    try:
        config = AddStyleConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CinstyleError(f"bad add-style options: {exc}") from exc
    if args.content is not None:
        content = load_images(
            list_content_images(args.content), max_side=photo_load_side(config.image_size, config.resize_range)
        )
        content_source = str(args.content)
    else:
        content = default_content_images()
        content_source = "scikit-image sample photos: " + ", ".join(DEFAULT_CONTENT_PHOTOS)
    painting = load_image_file(args.style, max_side=config.style_size)
    style = image_to_tensor(painting).to(device)
    out = _output_path(args.out, name)

    # A bar with ETA on a terminal; none on a pipe or in a log (disable=None), where it would be a stream of updates.
    with tqdm(total=config.steps, desc=f"add-style {name}", unit="step", dynamic_ncols=True, disable=None) as bar:

        def progress(fraction: float) -> None:
            bar.update(round(fraction * config.steps) - bar.n)

        rows = learn_style(bank, style, name, load_vgg19(device=device), content, config, progress=progress)
    metadata = learned_style_metadata(
        sha256_file(args.style), config, source_file=args.style.name, content=content_source
    )
    save_learned_style(out, name, rows, bank.fingerprint, metadata=metadata, painting=thumbnail_jpeg(painting))
    print(str(out))
    return 0


def _output_path(out: Path | None, name: str) -> Path:
    """--out as a file (``*.safetensors``) or a folder; default ./learned/<name>.safetensors."""
    from model.errors import CinstyleError

    if out is None:
        return DEFAULT_LEARNED_DIR / f"{name}.safetensors"
    out = Path(out)
    if out.suffix == ".safetensors" and not out.is_dir():
        if out.stem != name:  # checked before learning: a learned style's file must carry its name
            raise CinstyleError(f"--out {out.name} must be named {name}.safetensors (the style's name), or be a folder")
        return out
    return out / f"{name}.safetensors"
