"""Texture synthesis: the figures of docs/textures.md and the numbers beside them.

One public-domain painting (default: Van Gogh's Starry Night from ../shared/data/styles,
see ../shared/data/SOURCES.md) is synthesized from noise at ``--size`` (256 px) with the
service's defaults (`model.slow.texture_config`: 200 steps, coarse to fine from relu4_1, 120 s limit;
the painting at the service's 512 px style side), once for each deepest Gram layer
relu1_1 .. relu5_1 (the strip: structures grow with the receptive field), and once more at
relu5_1 with ``tileable`` (the 3 x 3 tiling). Scored with `model.slow.gram_style_loss`
(the relative Gram error over the run's layers, the objective's style term) as a ratio to
that of the starting noise, and with `model.slow.seam_contrast` (the mean |difference|
across the tile borders over that of the image's own same-phase neighbouring pixels)
for the tileable and the plain relu5_1 texture. Times are wall-clock on this machine.

    python -m benchmarks.textures [--style PAINTING] [--size 256] [--steps 200] [--threads 2]

Writes docs/textures/strip.png, docs/textures/tiled_3x3.png and benchmarks/results/textures.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FIGURES = REPO / "docs" / "textures"
DEFAULT_STYLE = REPO.parent / "shared" / "data" / "styles" / "van_gogh_starry_night.jpg"


def _commit() -> str:
    try:
        run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return run.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _save_png(tensor: torch.Tensor, path: Path) -> None:
    from PIL import Image

    array = tensor.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    # 256 colours (median cut, no dithering): a third of the size, no visible difference at this scale.
    Image.fromarray(array).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def main(argv: list[str] | None = None) -> int:
    from torchvision.utils import make_grid

    from model.imageio import decode_image, image_to_tensor
    from model.slow import (
        TEXTURE_LAYERS,
        gram_style_loss,
        seam_contrast,
        synthesize_texture,
        texture_config,
        texture_noise,
    )
    from model.vgg import load_vgg19

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", type=Path, default=DEFAULT_STYLE)
    parser.add_argument("--style-side", type=int, default=512, help="the painting's longer side (service default)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="default: texture_config()'s")
    parser.add_argument("--time-limit", type=float, default=None, help="default: texture_config()'s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    overrides = {k: v for k, v in (("steps", args.steps), ("time_limit_s", args.time_limit)) if v is not None}
    vgg = load_vgg19()
    style = image_to_tensor(decode_image(args.style.read_bytes(), max_side=args.style_side).rgb)
    size = (args.size, args.size)
    noise = texture_noise(style, size, args.seed)  # the start synthesize_texture takes

    def run(deepest: str, tileable: bool) -> tuple[torch.Tensor, dict]:
        config = texture_config(deepest, **overrides)
        steps = 0

        def count(_pixels: torch.Tensor) -> None:
            nonlocal steps
            steps += 1

        started = time.perf_counter()
        texture = synthesize_texture(style, size, vgg, config, tileable=tileable, seed=args.seed, on_step=count)
        seconds = time.perf_counter() - started
        layers = config.style_layers
        ratio = gram_style_loss(vgg, texture, style, layers) / gram_style_loss(vgg, noise, style, layers)
        row = {
            "layers": deepest,
            "tileable": tileable,
            "loss_ratio": round(ratio, 5),
            "seconds": round(seconds, 1),
            "steps_done": steps,
            "steps": config.steps,
            "seam": {k: round(v, 4) for k, v in seam_contrast(texture).items()},
        }
        print(
            f"{deepest:8} tileable={tileable!s:5} loss ratio {ratio:.4f}  {seconds:6.1f} s  "
            f"{steps}/{config.steps} steps  seam ratio {row['seam']['ratio']:.2f}",
            flush=True,
        )
        return texture, row

    rows, panels = [], []
    for deepest in TEXTURE_LAYERS:
        texture, row = run(deepest, tileable=False)
        rows.append(row)
        panels.append(texture[0])
    tiled_texture, tiled_row = run("relu5_1", tileable=True)
    rows.append(tiled_row)

    FIGURES.mkdir(parents=True, exist_ok=True)
    side = args.size
    painting = style[0]
    scale = side / min(painting.shape[-2:])
    shown = torch.nn.functional.interpolate(
        style, scale_factor=scale, mode="bilinear", antialias=True, align_corners=False
    )[0]
    top, left = (shown.shape[1] - side) // 2, (shown.shape[2] - side) // 2
    panels.insert(0, shown[:, top : top + side, left : left + side])
    _save_png(make_grid(panels, nrow=len(panels), padding=4, pad_value=1.0), FIGURES / "strip.png")
    _save_png(tiled_texture[0].repeat(1, 3, 3), FIGURES / "tiled_3x3.png")

    plain = next(r for r in rows if r["layers"] == "relu5_1" and not r["tileable"])
    result = {
        "benchmark": "textures",
        "command": "python -m benchmarks.textures " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": _commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "note": "a shared machine: other jobs ran on the same cores, so times are upper bounds",
        },
        "style": args.style.name,
        "style_size": list(style.shape[-2:]),
        "size": list(size),
        "seed": args.seed,
        "config": {k: v for k, v in vars(texture_config(**overrides)).items() if k != "style_layer_weights"},
        "metric": "loss_ratio = relative Gram error over relu1_1..LAYERS of the texture / that of the starting noise; "
        "seam = seam_contrast: mean |diff| across the 2x2 tile borders / mean |diff| of same-phase inner neighbours",
        "default": {"layers": "relu5_1", "loss_ratio": plain["loss_ratio"], "seconds": plain["seconds"]},
        "seams": {"tileable": tiled_row["seam"], "plain": plain["seam"]},
        "runs": rows,
        "figures": ["docs/textures/strip.png", "docs/textures/tiled_3x3.png"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "textures.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'textures.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
