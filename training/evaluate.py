"""``cinstyle evaluate``: how well each style of a bank is learned, in numbers and pictures.

Per style, on held-out photos (longer side 320 px) against the style image
(longer side 512 px), with the shared losses of `model.losses`:

- **style ratio**: the absolute Gram loss (F F^T / (C*H*W), squared Frobenius
  distance, relu1_1..relu5_1 weighted equally) of the stylized image divided by
  that of the unstylized photo. 1 = no closer to the painting than the photo;
  lower is better.
- **content change**: ||F(out) - F(photo)||^2 / ||F(photo)||^2 at relu4_2
  (0 for the photo itself).
- **total**: the training objective (`training.objective.transfer_loss`, with the
  bank's loss weights) of the output; for the photo it is the style term alone.
- **per-layer ratio**: for each style layer on its own, ||G(out) - G(painting)||^2 /
  ||G(photo) - G(painting)||^2. The absolute style ratio is >99 % relu4_1 with the
  caffe VGG weights; here every layer counts equally, so a network that matches
  colour and fine texture (relu1_1-relu3_1) but not the painting's large
  structures (relu5_1) shows it. ``layer_mean`` is their mean over the five layers.
- **palette distance**: total-variation distance between the RGB colour
  histograms (8 bins per channel) of the output and of the painting: 0 = the same
  colours in the same proportions, 1 = no colour in common. Given for the photo too.

Each is given for the network and for the slow path (`model.slow`, a bounded
number of L-BFGS steps on the first photo(s)), the yardstick of what pixel
optimisation reaches. Writes report.md, report.json, contact_sheet.png and
strokes.png (each style on the first photo at up to 1024 px, a crop at 1:1).
"""

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

from model.bank import StyleBank, atomic_write_bytes, sha256_file
from model.errors import CinstyleError
from model.imageio import downscale_tensor
from model.losses import CONTENT_LAYER, STYLE_LAYERS, content_change, gram_matrix, style_loss, target_grams
from model.slow import SlowConfig, slow_stylize
from model.stylize import stylize_tensor
from model.vgg import VGG19Features
from training.config import LossWeights
from training.objective import weighted_loss

log = logging.getLogger(__name__)

METRICS = ("style_ratio", "content_change", "total")
STROKE_PHOTO_SIDE = 1024  # longer side of the photo of strokes.png (downscaled only)


@dataclass(frozen=True)
class EvalConfig:
    photo_side: int = 320  # longer side of the held-out photos (downscaled only)
    style_side: int = 512  # longer side of the style images (downscaled only)
    slow_steps: int = 50  # L-BFGS steps of the slow path per style; 0 skips it
    slow_photos: int = 1  # the slow path runs on this many of the photos (it is ~100x the network's cost)
    slow_time_limit_s: float = 60.0  # per style and photo
    loss_weights: LossWeights = field(default_factory=LossWeights)
    sheet_tile: int = 128  # contact sheet tile side (photos centre-cropped to squares)
    # The network's output is mixed with the photo as the service's ``strength`` does;
    # below 1 it trades style for content, which places banks on one trade-off curve.
    strength: float = 1.0

    def __post_init__(self) -> None:
        for name in ("photo_side", "style_side", "sheet_tile"):
            if getattr(self, name) < 32:
                raise ValueError(f"{name} must be >= 32, got {getattr(self, name)}")
        if self.slow_steps < 0 or self.slow_photos < 0:
            raise ValueError(f"slow_steps and slow_photos must be >= 0, got {self.slow_steps}, {self.slow_photos}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {self.strength}")
        if not self.slow_time_limit_s > 0:
            raise ValueError(f"slow_time_limit_s must be > 0, got {self.slow_time_limit_s}")


@dataclass
class StyleScores:
    name: str
    style_ratio_net: float
    content_change_net: float
    total_net: float
    total_photo: float
    style_loss_photo: float  # absolute Gram loss of the unstylized photos (the ratios' denominator)
    style_ratio_slow: float | None = None
    content_change_slow: float | None = None
    total_slow: float | None = None
    slow_seconds: float | None = None
    palette_distance_net: float = float("nan")
    palette_distance_photo: float = float("nan")
    layer_ratios_net: dict[str, float] = field(default_factory=dict)  # per style layer, photo = 1
    layer_ratios_slow: dict[str, float] | None = None

    @property
    def layer_mean_net(self) -> float:
        return _mean(list(self.layer_ratios_net.values())) if self.layer_ratios_net else float("nan")


@dataclass
class EvalReport:
    styles: list[StyleScores]
    photos: list[str]
    config: EvalConfig
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def averages(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for key in _score_keys():
            values = [getattr(s, key) for s in self.styles if getattr(s, key) is not None]
            out[key] = sum(values) / len(values) if values else None
        return out

    def layer_averages(self) -> dict[str, float]:
        """Per style layer, the mean over styles of the network's per-layer ratio; plus ``layer_mean``."""
        out = {layer: _mean([s.layer_ratios_net[layer] for s in self.styles]) for layer in STYLE_LAYERS}
        out["layer_mean"] = _mean([s.layer_mean_net for s in self.styles])
        return out

    def layer_worst(self) -> dict[str, dict[str, Any]]:
        """Per style layer (and ``layer_mean``), the style with the highest network ratio."""
        out = {}
        for layer in STYLE_LAYERS:
            style = max(self.styles, key=lambda s, layer=layer: s.layer_ratios_net[layer])
            out[layer] = {"name": style.name, "value": style.layer_ratios_net[layer]}
        style = max(self.styles, key=lambda s: s.layer_mean_net)
        out["layer_mean"] = {"name": style.name, "value": style.layer_mean_net}
        return out

    def worst(self) -> dict[str, dict[str, Any]]:
        """The style with the highest (worst) value of each network metric."""
        out = {}
        for key in ("style_ratio_net", "content_change_net", "total_net"):
            style = max(self.styles, key=lambda s, key=key: getattr(s, key))
            out[key] = {"name": style.name, "value": getattr(style, key)}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "photos": self.photos,
            "config": asdict(self.config),
            "seconds": round(self.seconds, 1),
            **self.info,
            "styles": [{**asdict(s), "layer_mean_net": s.layer_mean_net} for s in self.styles],
            "average": self.averages(),
            "worst": self.worst(),
            "layer_average": self.layer_averages(),
            "layer_worst": self.layer_worst(),
        }


def _score_keys() -> list[str]:
    return [k for k in StyleScores.__dataclass_fields__ if k != "name" and not k.startswith("layer_ratios")]


class _Features:
    """What the metrics need of one image: its Gram matrices and content features."""

    def __init__(self, loss_network: VGG19Features, image: torch.Tensor) -> None:
        with torch.no_grad():
            features = loss_network(image, (*STYLE_LAYERS, CONTENT_LAYER))
        self.image = image
        self.grams = {l: gram_matrix(features[l]) for l in STYLE_LAYERS}
        self.content = features[CONTENT_LAYER]

    def absolute_style_loss(self, grams: dict[str, torch.Tensor]) -> float:
        return style_loss(self.grams, grams).item()

    def layer_distances(self, grams: dict[str, torch.Tensor]) -> dict[str, float]:
        """Per style layer, the absolute Gram distance to ``grams`` (each layer alone)."""
        return {layer: style_loss({layer: self.grams[layer]}, {layer: grams[layer]}).item() for layer in STYLE_LAYERS}


def _scores(
    image: _Features, photo: _Features, grams: dict[str, torch.Tensor], photo_style_loss: float, weights: LossWeights
) -> dict[str, Any]:
    _, terms = weighted_loss(image.image, image.grams, grams, image.content, photo.content, weights)
    photo_layers = photo.layer_distances(grams)
    return {
        "style_ratio": image.absolute_style_loss(grams) / max(photo_style_loss, 1e-30),
        "content_change": content_change(image.content, photo.content).item(),
        "total": terms["total"],
        "layers": {
            layer: distance / max(photo_layers[layer], 1e-30)
            for layer, distance in image.layer_distances(grams).items()
        },
    }


PALETTE_BINS = 8


def colour_histogram(image: torch.Tensor, bins: int = PALETTE_BINS) -> torch.Tensor:
    """Normalised joint RGB histogram (bins^3 entries) of a (1, 3, H, W) image in [0, 1]."""
    index = (image[0].clamp(0, 1) * bins).long().clamp(max=bins - 1).reshape(3, -1)
    flat = (index[0] * bins + index[1]) * bins + index[2]
    counts = torch.bincount(flat, minlength=bins**3).double()
    return counts / counts.sum()


def palette_distance(image: torch.Tensor, painting_histogram: torch.Tensor) -> float:
    """Total-variation distance between ``image``'s colour histogram and a painting's, in [0, 1]."""
    return 0.5 * (colour_histogram(image.cpu()) - painting_histogram).abs().sum().item()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _mean_layers(scores: list[dict[str, Any]]) -> dict[str, float]:
    return {layer: _mean([s["layers"][layer] for s in scores]) for layer in STYLE_LAYERS}


def evaluate(
    bank: StyleBank,
    style_images: Sequence[torch.Tensor],
    photos: Sequence[torch.Tensor],
    loss_network: VGG19Features,
    config: EvalConfig = EvalConfig(),
    photo_names: Sequence[str] = (),
    progress: Callable[[float], None] | None = None,
    only: Sequence[str] | None = None,
) -> EvalReport:
    """Score every style of ``bank`` (or the ``only`` ones) on ``photos``; ``style_images`` are in
    bank order (or in the order of ``only``).

    Images are (1, 3, H, W) in [0, 1]; they are downscaled to the config's sizes here.
    """
    names = list(bank.style_names) if only is None else list(only)
    unknown = sorted(set(names) - set(bank.style_names))
    if unknown:
        raise ValueError(f"styles not in the bank: {', '.join(unknown)}")
    if len(style_images) != len(names):
        raise ValueError(f"{len(style_images)} style images for {len(names)} styles")
    if not photos:
        raise ValueError("evaluation needs at least one photo")
    started = time.monotonic()
    device = next(loss_network.parameters()).device
    network = bank.network
    net_device = next(network.parameters()).device
    photos = [downscale_tensor(p.to(device, torch.float32), config.photo_side) for p in photos]
    photo_features = [_Features(loss_network, p) for p in photos]
    slow_config = (
        SlowConfig(steps=config.slow_steps, time_limit_s=config.slow_time_limit_s) if config.slow_steps > 0 else None
    )
    n_styles = len(bank.styles)
    results = []
    for done, (name, style_image) in enumerate(zip(names, style_images, strict=True)):
        index = bank.style_names.index(name)
        style = downscale_tensor(style_image.to(device, torch.float32), config.style_side)
        grams = target_grams(loss_network, style)
        painting_histogram = colour_histogram(style.cpu())
        palette_net, palette_photo = [], []
        weights = torch.nn.functional.one_hot(torch.tensor([index]), n_styles).float().to(net_device)
        net_scores, photo_totals, photo_losses, slow_scores, slow_seconds = [], [], [], [], 0.0
        for photo_index, (photo, features) in enumerate(zip(photos, photo_features, strict=True)):
            photo_loss = features.absolute_style_loss(grams)
            photo_losses.append(photo_loss)
            photo_totals.append(_scores(features, features, grams, photo_loss, config.loss_weights)["total"])
            with torch.no_grad():
                output = stylize_tensor(network, photo.to(net_device), weights, config.strength).to(device)
            palette_net.append(palette_distance(output, painting_histogram))
            palette_photo.append(palette_distance(photo, painting_histogram))
            net_scores.append(
                _scores(_Features(loss_network, output), features, grams, photo_loss, config.loss_weights)
            )
            if slow_config is not None and photo_index < config.slow_photos:
                slow_started = time.monotonic()
                slow = slow_stylize(photo, style, loss_network, slow_config)
                slow_seconds += time.monotonic() - slow_started
                slow_scores.append(
                    _scores(_Features(loss_network, slow), features, grams, photo_loss, config.loss_weights)
                )
        scores = StyleScores(
            name=name,
            style_ratio_net=_mean([s["style_ratio"] for s in net_scores]),
            content_change_net=_mean([s["content_change"] for s in net_scores]),
            total_net=_mean([s["total"] for s in net_scores]),
            total_photo=_mean(photo_totals),
            style_loss_photo=_mean(photo_losses),
            palette_distance_net=_mean(palette_net),
            palette_distance_photo=_mean(palette_photo),
            layer_ratios_net=_mean_layers(net_scores),
        )
        if slow_scores:
            scores.layer_ratios_slow = _mean_layers(slow_scores)
            scores.style_ratio_slow = _mean([s["style_ratio"] for s in slow_scores])
            scores.content_change_slow = _mean([s["content_change"] for s in slow_scores])
            scores.total_slow = _mean([s["total"] for s in slow_scores])
            scores.slow_seconds = slow_seconds
        results.append(scores)
        log.info("evaluated %s: %s", name, {k: v for k, v in asdict(scores).items() if k != "name"})
        if progress is not None:
            progress((done + 1) / len(names))
    return EvalReport(styles=results, photos=list(photo_names), config=config, seconds=time.monotonic() - started)


def blend_pairs(n_styles: int) -> list[tuple[int, int]]:
    """Consecutive style pairs for the blend row: (0, 1), (2, 3), ... (at least one pair when n >= 2)."""
    if n_styles < 2:
        return []
    return [(2 * i % n_styles, (2 * i + 1) % n_styles) for i in range(max(1, n_styles // 3))]


BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # weight of the pair's second style


def sheet_shape(n_photos: int, n_styles: int) -> tuple[int, int]:
    """(rows, columns) of the contact sheet."""
    pairs = blend_pairs(n_styles)
    return n_photos + (1 if pairs else 0), 1 + max(n_styles, len(BLEND_WEIGHTS) * len(pairs))


@torch.inference_mode()
def contact_sheet(network, photos: Sequence[torch.Tensor], path: Path, tile: int = 128) -> Path:
    """Rows = photos (original, then every style); a last row of the first photo with 2-style
    blends at 0.25 / 0.5 / 0.75 of consecutive style pairs. Photos are centre-cropped squares."""
    from torchvision.transforms import v2

    n_styles = network.config.n_styles
    device = next(network.parameters()).device
    prepare = v2.Compose([v2.Resize(tile, antialias=True), v2.CenterCrop(tile)])
    squares = [prepare(p[0] if p.dim() == 4 else p).to(device) for p in photos]
    rows, columns = sheet_shape(len(squares), n_styles)
    eye = torch.eye(n_styles, device=device)
    blank = torch.ones(3, tile, tile, device=device)
    tiles = []
    for square in squares:
        batch = square.unsqueeze(0).expand(n_styles, -1, -1, -1)
        row = [square, *network(batch, eye)]
        tiles += row + [blank] * (columns - len(row))
    if rows > len(squares):
        mixes = [(1 - w) * eye[a] + w * eye[b] for a, b in blend_pairs(n_styles) for w in BLEND_WEIGHTS]
        stacked = torch.stack(mixes)
        row = [squares[0], *network(squares[0].unsqueeze(0).expand(len(mixes), -1, -1, -1), stacked)]
        tiles += row + [blank] * (columns - len(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(torch.stack([t.float().clamp(0, 1).cpu() for t in tiles]), nrow=columns, padding=2, pad_value=1.0)
    save_image(grid, str(path))
    return path


@torch.inference_mode()
def stroke_sheet(
    network, photo: torch.Tensor, names: Sequence[str], path: Path, crop: int = 256, columns: int = 6
) -> Path:
    """Every style on one photo, each shown as a ``crop`` x ``crop`` centre crop of the result at the
    photo's own resolution (1:1, no resampling), so brush strokes can be judged; labelled by style."""
    from PIL import Image, ImageDraw, ImageFont

    n_styles = network.config.n_styles
    device = next(network.parameters()).device
    image = (photo if photo.dim() == 4 else photo.unsqueeze(0)).to(device, torch.float32)
    height, width = image.shape[-2:]
    side_h, side_w = min(crop, height), min(crop, width)
    top, left = (height - side_h) // 2, (width - side_w) // 2
    tiles = []
    for index in range(n_styles):
        weights = torch.nn.functional.one_hot(torch.tensor([index]), n_styles).float().to(device)
        output = stylize_tensor(network, image, weights)[0, :, top : top + side_h, left : left + side_w]
        tiles.append(output.cpu())
    label_h, pad = 18, 4
    rows = -(-n_styles // columns)
    sheet = Image.new("RGB", (columns * (side_w + pad) + pad, rows * (side_h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    for index, (tile, name) in enumerate(zip(tiles, names, strict=True)):
        x = pad + (index % columns) * (side_w + pad)
        y = pad + (index // columns) * (side_h + label_h + pad)
        array = tile.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
        sheet.paste(Image.fromarray(array), (x, y + label_h))
        draw.text((x + 2, y + 2), name if len(name) <= 40 else name[:39] + "…", fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def report_markdown(report: EvalReport, style_names: list[str]) -> str:
    columns = [
        ("style ratio net", "style_ratio_net"),
        ("style ratio slow", "style_ratio_slow"),
        ("content change net", "content_change_net"),
        ("content change slow", "content_change_slow"),
        ("total net", "total_net"),
        ("total slow", "total_slow"),
        ("total photo", "total_photo"),
        ("palette net", "palette_distance_net"),
        ("palette photo", "palette_distance_photo"),
    ]
    config = report.config
    lines = [
        "# cinstyle evaluation",
        "",
        f"{len(report.photos)} held-out photo(s) at longer side {config.photo_side} px; style images at "
        f"{config.style_side} px. Slow path: "
        + (
            f"{config.slow_steps} L-BFGS steps on the first {config.slow_photos} photo(s)."
            if config.slow_steps
            else "skipped."
        )
        + (
            f" The network's output is mixed with the photo at strength {config.strength:g}."
            if config.strength < 1
            else ""
        ),
        "",
        "- **style ratio**: absolute Gram style loss (relu1_1..relu5_1, equal weights) of the output / that of "
        "the unstylized photo (photo = 1; lower = closer to the painting).",
        "- **content change**: ||F(out) - F(photo)||² / ||F(photo)||² at relu4_2 (photo = 0).",
        "- **palette**: total-variation distance between the RGB colour histograms (8³ bins) of the output "
        "(net) or the photo and the painting (0 = the painting's colours in its proportions, 1 = none shared).",
        f"- **total**: the training objective (style {config.loss_weights.style:g} x relative Gram loss"
        + (
            " with layer weights " + ", ".join(f"{k} {v:g}" for k, v in config.loss_weights.style_layer_weights.items())
            if config.loss_weights.style_layer_weights
            else ""
        )
        + f" + content {config.loss_weights.content:g} x content change"
        + f" + tv {config.loss_weights.tv:g} x total variation).",
        "",
        "| style | " + " | ".join(c for c, _ in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for scores in report.styles:
        lines.append(f"| {scores.name} | " + " | ".join(_fmt(getattr(scores, k)) for _, k in columns) + " |")
    averages = report.averages()
    lines.append("| **average** | " + " | ".join(_fmt(averages[k]) for _, k in columns) + " |")
    lines += ["", "Worst styles (network):", ""]
    for key, entry in report.worst().items():
        lines.append(f"- {key.replace('_', ' ')}: **{entry['name']}** ({_fmt(entry['value'])})")
    lines += ["", *layer_table_markdown(report)]
    n_styles = len(style_names)
    pairs = blend_pairs(n_styles)
    lines += [
        "",
        "## Contact sheet",
        "",
        "![contact sheet](contact_sheet.png)",
        "",
        "Strokes at full resolution: every style on the first photo (longer side up to 1024 px), a 256 px "
        "centre crop of the result at 1:1:",
        "",
        "![strokes](strokes.png)",
        "",
        "Columns: original, then " + ", ".join(style_names) + ".",
    ]
    if pairs:
        blends = ", ".join(f"{style_names[a]}→{style_names[b]}" for a, b in pairs)
        lines.append(f"Last row: the first photo, then blends at {', '.join(map(str, BLEND_WEIGHTS))} of {blends}.")
    lines += ["", f"Photos: {', '.join(report.photos)}. Evaluation took {report.seconds:.0f} s.", ""]
    return "\n".join(lines)


def layer_table_markdown(report: EvalReport) -> list[str]:
    """The per-layer table: each style layer's ratio ||G(out) - G(p)||² / ||G(photo) - G(p)||² (network)."""
    has_slow = any(s.layer_ratios_slow for s in report.styles)
    header = [*STYLE_LAYERS, "mean"] + (["mean slow"] if has_slow else [])
    lines = [
        "## Per layer",
        "",
        "Each style layer alone: ||G(out) − G(painting)||² / ||G(photo) − G(painting)||² (photo = 1, lower is "
        "closer), averaged over the photos; **mean** is the mean over the five layers, so every layer counts "
        "equally (the absolute ratio above is almost all relu4_1). relu5_1 is where a painting's large "
        "structures show.",
        "",
        "| style | " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(header),
    ]
    for scores in report.styles:
        cells = [_fmt(scores.layer_ratios_net[layer]) for layer in STYLE_LAYERS] + [_fmt(scores.layer_mean_net)]
        if has_slow:
            slow = scores.layer_ratios_slow
            cells.append(_fmt(_mean(list(slow.values())) if slow else None))
        lines.append(f"| {scores.name} | " + " | ".join(cells) + " |")
    averages, worst = report.layer_averages(), report.layer_worst()
    keys = [*STYLE_LAYERS, "layer_mean"]
    average_cells = [_fmt(averages[k]) for k in keys]
    worst_cells = [f"{_fmt(worst[k]['value'])} ({worst[k]['name']})" for k in keys]
    if has_slow:
        slow_means = [_mean(list(s.layer_ratios_slow.values())) for s in report.styles if s.layer_ratios_slow]
        average_cells.append(_fmt(_mean(slow_means)))
        worst_cells.append("–")
    lines.append("| **average** | " + " | ".join(average_cells) + " |")
    lines.append("| **worst** | " + " | ".join(worst_cells) + " |")
    return lines


def write_report(report: EvalReport, out_dir: Path, style_names: list[str]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    atomic_write_bytes(md_path, report_markdown(report, style_names).encode())
    atomic_write_bytes(json_path, json.dumps(report.to_dict(), indent=2, allow_nan=False).encode())
    return md_path, json_path


def resolve_style_files(bank: StyleBank, styles: Sequence[str] | None) -> list[Path]:
    """The style image of every bank style, in bank order.

    ``styles``: image files in bank order; or one folder, searched for each style's
    recorded ``source_file`` (else ``<name>.*``); or None: the images the bank was
    trained on (``provenance.train_config.styles``).
    """
    from training.data import IMAGE_SUFFIXES

    if styles and not (len(styles) == 1 and Path(styles[0]).is_dir()):
        files = [Path(s) for s in styles]
        if len(files) != len(bank.styles):
            raise ValueError(
                f"{len(files)} style images given for a bank with {len(bank.styles)} styles "
                f"({', '.join(bank.style_names)}); give one per style in bank order, or a folder"
            )
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"style images not found: {', '.join(missing)}")
        return files
    candidates: list[Path] = []
    if styles:
        candidates = sorted(p for p in Path(styles[0]).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        for entry in bank.provenance.get("train_config", {}).get("styles", []):
            path = Path(entry)
            if path.is_dir():
                candidates += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            elif path.is_file():
                candidates.append(path)
    by_name = {p.name: p for p in candidates}
    by_stem = {p.stem.lower(): p for p in candidates}
    files, missing = [], []
    for info in bank.styles:
        found = by_name.get(str(info.metadata.get("source_file", ""))) or by_stem.get(info.name)
        if found is None:
            missing.append(info.name)
            continue
        recorded = info.metadata.get("source_sha256")
        if recorded and sha256_file(found) != recorded:
            log.warning("style image %s differs from the one style %r was trained on", found, info.name)
        files.append(found)
    if missing:
        where = styles[0] if styles else "the bank's training style paths"
        raise FileNotFoundError(
            f"no style image found in {where} for: {', '.join(missing)}; "
            "pass --styles FILES (bank order) or --styles FOLDER"
        )
    return files


def evaluate_cli(args) -> int:
    """``cinstyle evaluate``: score a bank on held-out photos; write report.md/json and contact_sheet.png."""
    from tqdm import tqdm

    from model.bank import load_bank
    from model.imageio import image_to_tensor, load_image_file
    from model.vgg import load_vgg19
    from training.add_style import bank_loss_weights
    from training.data import list_content_images
    from training.distributed import resolve_device

    device = resolve_device(args.device)
    bank = load_bank(args.bank, device=device)
    style_files = resolve_style_files(bank, args.styles)
    photo_files = list_content_images(args.content)
    if args.max_photos is not None:
        if args.max_photos < 1:
            raise ValueError(f"--max-photos must be >= 1, got {args.max_photos}")
        photo_files = photo_files[: args.max_photos]
    values: dict[str, Any] = {"loss_weights": bank_loss_weights(bank)}
    if args.slow_steps is not None:
        values["slow_steps"] = args.slow_steps
    if args.strength is not None:
        values["strength"] = args.strength
    try:
        config = EvalConfig(**values)
    except ValueError as exc:
        raise CinstyleError(f"bad evaluation options: {exc}") from exc
    photos = [image_to_tensor(load_image_file(f, max_side=config.photo_side)) for f in photo_files]
    styles = [image_to_tensor(load_image_file(f, max_side=config.style_side)) for f in style_files]
    loss_network = load_vgg19(device=device)
    with tqdm(total=len(styles), desc="evaluate", unit="style", dynamic_ncols=True) as bar:
        report = evaluate(
            bank,
            styles,
            photos,
            loss_network,
            config,
            [f.name for f in photo_files],
            progress=lambda fraction: bar.update(round(fraction * len(styles)) - bar.n),
        )
    report.info.update(
        {
            "bank": str(bank.path),
            "bank_fingerprint": bank.fingerprint,
            "bank_weights_sha256": bank.weights_sha256,
            "style_files": [str(f) for f in style_files],
            "device": str(device),
        }
    )
    out = Path(args.out)
    sheet = contact_sheet(bank.network, photos, out / "contact_sheet.png", tile=config.sheet_tile)
    # Strokes are judged at a size users get (up to 1024 px), not at the metrics' 320 px.
    stroke_photo = image_to_tensor(load_image_file(photo_files[0], max_side=STROKE_PHOTO_SIDE))
    strokes = stroke_sheet(bank.network, stroke_photo, bank.style_names, out / "strokes.png")
    md_path, json_path = write_report(report, out, bank.style_names)
    averages = report.averages()
    print(
        f"style ratio net {_fmt(averages['style_ratio_net'])} (slow {_fmt(averages['style_ratio_slow'])}), "
        f"content change net {_fmt(averages['content_change_net'])} "
        f"(slow {_fmt(averages['content_change_slow'])}) over {len(report.styles)} styles"
    )
    for path in (md_path, json_path, sheet, strokes):
        print(str(path))
    return 0
