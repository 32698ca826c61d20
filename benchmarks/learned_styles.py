"""Styles learned online (``POST /v1/styles``) against the bank's built-in styles, in one run.

Each held-out painting (one the bank was not trained on; the bundled bank holds all 22 paintings of
../shared/data, so pass ``--bank`` a bank without them, e.g. the 16-style one of commit 59ac65c) is
learned with the service's default settings (`app.settings.Settings`: ``learn_steps``, ``learn_batch_size``,
``learn_image_size``; the bank's loss weights and photo scale; the built-in content
photos of scikit-image unless ``--learn-content``), exactly as the service's learn job
calls `training.add_style.learn_style`, and timed. Then the learned styles and the
bank's built-ins are scored by `training.evaluate.evaluate` on the same held-out photos:
the per-layer Gram ratios (each layer's ||G(out) - G(painting)||^2 over the photo's), their
mean over the five layers, and the palette distance (RGB histogram total variation) to
the painting. Figures: learned mean over built-in mean (target <= 1.5) and the palettes.

    python -m benchmarks.learned_styles --paintings P1.jpg P2.jpg ... --content HELD_OUT_PHOTOS \
        [--bank model/checkpoints/default] [--max-photos 8] [--steps N] [--init nearest|mean] \
        [--out benchmarks/results/learned_styles.json]

The learned rows are kept next to the results (``--keep DIR``) for a look at them in the service.
"""

import argparse
import json
import logging
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from benchmarks.load import git_commit

REPO = Path(__file__).resolve().parents[1]


class _StartRecorder(logging.Handler):
    """Keeps the start style `training.add_style.learn_style` logs for each learned name."""

    def __init__(self, starts: dict[str, str]) -> None:
        super().__init__(logging.INFO)
        self.starts = starts

    def emit(self, record: logging.LogRecord) -> None:
        if "starts from" in str(record.msg) and isinstance(record.args, tuple) and len(record.args) == 2:
            self.starts[str(record.args[0])] = str(record.args[1])


def main(argv: list[str] | None = None) -> int:
    from app.settings import Settings
    from model.bank import DEFAULT_BANK_DIR, load_bank, save_learned_style, sha256_file
    from model.imageio import image_to_tensor, load_image_file
    from model.vgg import load_vgg19
    from training.add_style import (
        DEFAULT_CONTENT_PHOTOS,
        INIT_CHOICES,
        AddStyleConfig,
        bank_loss_weights,
        bank_resize_range,
        default_content_images,
        learn_style,
    )
    from training.config import LossWeights
    from training.data import list_content_images, load_images, photo_load_side, style_name_from_path
    from training.evaluate import EvalConfig, evaluate, resolve_style_files

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, default=DEFAULT_BANK_DIR)
    parser.add_argument(
        "--paintings", type=Path, nargs="+", required=True, help="paintings the bank was not trained on"
    )
    parser.add_argument("--content", type=Path, required=True, help="held-out photos to score on")
    parser.add_argument("--styles", type=Path, default=None, help="folder of the bank's own paintings (for built-ins)")
    parser.add_argument("--max-photos", type=int, default=8)
    parser.add_argument("--learn-content", type=Path, default=None, help="photos to learn on (default: the service's)")
    parser.add_argument("--steps", type=int, default=None, help="default: the service's learn_steps")
    parser.add_argument("--init", choices=INIT_CHOICES, default=AddStyleConfig.init)
    parser.add_argument(
        "--style-layer-weight",
        action="append",
        default=None,
        metavar="LAYER=W",
        help="learn with this style layer weight instead of the bank's (repeatable; an experiment, not the service)",
    )
    parser.add_argument("--lr", type=float, default=None, help="default: AddStyleConfig's (an experiment)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the service's learn_image_size")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the service's learn_batch_size")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="also write the learned styles here")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "learned_styles.json")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("training.add_style").setLevel(logging.INFO)  # which bank style each one starts from
    starts: dict[str, str] = {}  # learned name -> the bank style it started from, read off that log line
    logging.getLogger("training.add_style").addHandler(_StartRecorder(starts))
    if args.threads:
        torch.set_num_threads(args.threads)

    settings = Settings()
    bank = load_bank(args.bank)
    # A held-out painting must not be one of the bank's own (the bundled bank holds all 22 of ../shared/data since
    # ee49525: measure against the 16-style bank, e.g. `git archive 59ac65c model/checkpoints/default | tar -x`).
    in_bank = {s.metadata.get("source_sha256"): s.name for s in bank.styles}
    for painting in args.paintings:
        if sha256_file(painting) in in_bank:
            parser.error(f"{painting} is the bank's style {in_bank[sha256_file(painting)]!r}; pass --bank without it")
    image_size = args.image_size or settings.learn_image_size
    loss_weights = bank_loss_weights(bank)
    if args.style_layer_weight:
        layers = dict(loss_weights.style_layer_weights)
        for item in args.style_layer_weight:
            layer, _, weight = item.partition("=")
            layers[layer] = float(weight)
        loss_weights = LossWeights.from_dict({**loss_weights.to_dict(), "style_layer_weights": layers})
    config = AddStyleConfig(
        steps=args.steps or settings.learn_steps,
        batch_size=args.batch_size or settings.learn_batch_size,
        image_size=image_size,
        resize_range=bank_resize_range(bank, image_size),
        loss_weights=loss_weights,
        style_size=settings.style_image_side,
        init=args.init,
        **({"lr": args.lr} if args.lr else {}),
    )
    if args.learn_content:
        learn_content = load_images(
            list_content_images(args.learn_content), max_side=photo_load_side(image_size, config.resize_range)
        )
        learn_source = str(args.learn_content)
    else:
        learn_content = default_content_images()
        learn_source = "scikit-image: " + ", ".join(DEFAULT_CONTENT_PHOTOS)
    loss_network = load_vgg19()

    learned_dir = Path(tempfile.mkdtemp(prefix="learned-")) if args.keep is None else args.keep
    learned_dir.mkdir(parents=True, exist_ok=True)
    learned = []
    for painting in args.paintings:
        name = "learned_" + style_name_from_path(painting)
        image = image_to_tensor(load_image_file(painting, max_side=config.style_size))
        started = time.perf_counter()
        rows = learn_style(bank, image, name, loss_network, learn_content, config)
        seconds = time.perf_counter() - started
        save_learned_style(learned_dir / f"{name}.safetensors", name, rows, bank.fingerprint, metadata={})
        entry = {"name": name, "painting": painting.name, "starts_from": starts.get(name)}
        learned.append({**entry, "learn_seconds": round(seconds, 1)})
        print(f"learned {name} in {seconds:.0f} s", flush=True)

    merged = load_bank(args.bank, learned_dir=learned_dir)
    photos_files = list_content_images(args.content)[: args.max_photos]
    eval_config = EvalConfig(slow_steps=0, loss_weights=config.loss_weights)
    photos = [image_to_tensor(load_image_file(f, max_side=eval_config.photo_side)) for f in photos_files]

    def paint(path: Path) -> torch.Tensor:
        return image_to_tensor(load_image_file(path, max_side=eval_config.style_side))

    builtin_files = resolve_style_files(bank, [str(args.styles)] if args.styles else None)
    builtin = evaluate(bank, [paint(f) for f in builtin_files], photos, loss_network, eval_config)
    names = [entry["name"] for entry in learned]
    scored = evaluate(merged, [paint(p) for p in args.paintings], photos, loss_network, eval_config, only=names)
    for entry, scores in zip(learned, scored.styles, strict=True):
        entry.update(
            layer_ratios=scores.layer_ratios_net,
            layer_mean=scores.layer_mean_net,
            palette_distance=scores.palette_distance_net,
            palette_distance_photo=scores.palette_distance_photo,
            content_change=scores.content_change_net,
        )

    def mean(values):
        values = list(values)
        return sum(values) / len(values)

    builtin_mean = builtin.layer_averages()["layer_mean"]
    learned_mean = mean(e["layer_mean"] for e in learned)
    report = {
        "command": "python -m benchmarks.learned_styles " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "commit": git_commit(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "bank": str(args.bank),
        "bank_fingerprint": bank.fingerprint,
        "learn_config": config.to_dict(),
        "learn_content": learn_source,
        "photos": [f.name for f in photos_files],
        "learned": learned,
        "learned_average": {
            "layer_mean": learned_mean,
            "palette_distance": mean(e["palette_distance"] for e in learned),
            "palette_distance_photo": mean(e["palette_distance_photo"] for e in learned),
            "content_change": mean(e["content_change"] for e in learned),
            "learn_seconds": mean(e["learn_seconds"] for e in learned),
        },
        "builtin_average": {
            "layer_mean": builtin_mean,
            "layer_ratios": {k: v for k, v in builtin.layer_averages().items() if k != "layer_mean"},
            "palette_distance": mean(s.palette_distance_net for s in builtin.styles),
            "palette_distance_photo": mean(s.palette_distance_photo for s in builtin.styles),
            "content_change": mean(s.content_change_net for s in builtin.styles),
        },
        "learned_over_builtin_layer_mean": learned_mean / builtin_mean,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for entry in learned:
        print(
            f"{entry['name']}: {entry['learn_seconds']:.0f} s, layer mean {entry['layer_mean']:.3f}, "
            f"palette {entry['palette_distance']:.3f} (photo {entry['palette_distance_photo']:.3f})"
        )
    print(
        f"learned layer mean {learned_mean:.3f} vs built-in {builtin_mean:.3f} "
        f"({report['learned_over_builtin_layer_mean']:.2f}x); palette learned "
        f"{report['learned_average']['palette_distance']:.3f} vs built-in "
        f"{report['builtin_average']['palette_distance']:.3f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
