"""HTTP load benchmark: the service on loopback vs the bare network, in one run, on one machine.

Starts ``cinstyle serve`` as a subprocess on 127.0.0.1, sends ``--requests``
stylize requests (PNG, ``--size`` px square) with 1, 4 and 16 concurrent
clients (each level bounded by ``--time-limit`` seconds), and reports
throughput and p50/p95/p99 latency. Beside it, the same network timed
in-process with `model.stylize.stylize_tensor` on the backend the server uses
(no HTTP, no decode/encode).
Prints a table and writes ``benchmarks/results/load.json``.

    python benchmarks/load.py                      # the bundled bank, 512 px
    python benchmarks/load.py --requests 8 --concurrency 1 4 --time-limit 20   # a quick look
    python benchmarks/load.py --device cuda --size 1024 --format jpeg --concurrency 1   # e2e vs network (GPU)
    ... --jpeg-codec pillow                       # the same with Pillow's codecs on the CPU
    python benchmarks/load.py --device cuda --concurrency 64 --batch-max 1             # then --batch-max 8

Without a bundled bank (a fresh checkout before training), a bank with the
default architecture and random weights is used: the speed is the same.
"""

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from app.settings import Settings  # noqa: E402
from benchmarks.provenance import git_commit  # noqa: E402, F401 - also imported from here
from model.bank import DEFAULT_BANK_DIR, StyleInfo, load_bank, save_bank  # noqa: E402
from model.stylize import stylize_tensor  # noqa: E402
from model.transformer import TransformerConfig, TransformerNet  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "load.json"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summarize(latencies_s: list[float], wall_s: float) -> dict:
    if not latencies_s:
        return {"n": 0}
    ms = [v * 1000 for v in latencies_s]
    return {
        "n": len(ms),
        "throughput_per_s": round(len(ms) / wall_s, 3),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def test_image(size: int) -> Image.Image:
    """A deterministic photo-like picture (gradient + noise) of size x size."""
    generator = torch.Generator().manual_seed(0)
    y = torch.linspace(0, 1, size).view(size, 1).expand(size, size)
    x = torch.linspace(0, 1, size).view(1, size).expand(size, size)
    rgb = torch.stack([x, y, (x + y) / 2]) * 200 + 30 * torch.rand(3, size, size, generator=generator)
    return Image.fromarray(rgb.clamp(0, 255).byte().permute(1, 2, 0).numpy(), "RGB")


def resolve_bank(checkpoint: Path | None, workdir: Path) -> tuple[Path, str]:
    if checkpoint is not None:
        return checkpoint, str(checkpoint)
    if (DEFAULT_BANK_DIR / "manifest.json").is_file():
        return DEFAULT_BANK_DIR, "bundled"
    network = TransformerNet(TransformerConfig(n_styles=4))
    path = save_bank(workdir / "random-bank", network, [StyleInfo(f"style{i}") for i in range(4)])
    return path, "random weights, default architecture (no bundled bank yet)"


def bare_model(
    bank_dir: Path, image: Image.Image, iterations: int, time_limit_s: float, device: str, backend: str
) -> dict:
    """The network alone, in-process, on the server's backend: one image at a time, as the service runs it."""
    from model.imageio import image_to_tensor

    bank = load_bank(bank_dir, device=device)
    network = bank.network
    if backend == "onnx":
        from model.onnx_backend import OnnxNetwork

        network = OnnxNetwork(bank.network, threads=torch.get_num_threads())
    tensor = image_to_tensor(image).to(device)
    weights = torch.zeros(1, bank.config.n_styles, device=device)
    weights[0, 0] = 1.0
    stylize_tensor(network, tensor, weights)  # warm-up
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < iterations and time.perf_counter() - started < time_limit_s:
        t0 = time.perf_counter()
        stylize_tensor(network, tensor, weights)
        if device == "cuda":
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - t0)
    return summarize(latencies, time.perf_counter() - started) | {"threads": torch.get_num_threads()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bank_dir: Path, workdir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    env = {
        **os.environ,
        "CINSTYLE_CHECKPOINT": str(bank_dir),
        "CINSTYLE_DATA_DIR": str(workdir / "data"),
        "CINSTYLE_DEVICE": args.device,
        "CINSTYLE_BACKEND": args.backend,
        "CINSTYLE_MAX_OUTPUT_SIDE": str(max(args.size, 16)),
        "CINSTYLE_MAX_WAITING": str(max(args.concurrency) * 2),
        "PYTHONPATH": os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))),
    }
    if args.server_concurrency:
        env["CINSTYLE_CONCURRENCY"] = str(args.server_concurrency)
    if args.batch_max:
        env["CINSTYLE_BATCH_MAX"] = str(args.batch_max)
    if args.jpeg_codec:
        env["CINSTYLE_JPEG_CODEC"] = args.jpeg_codec
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url, log_path
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"the server was not ready after 120 s:\n{log_path.read_text()[-3000:]}")


def run_level(
    url: str, style: str, payload: bytes, clients: int, requests: int, time_limit_s: float, fmt: str = "png"
) -> dict:
    """``clients`` threads share ``requests`` requests (uploads and results in ``fmt``); stops early at
    ``time_limit_s``."""
    latencies: list[float] = []
    inference_ms: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + time_limit_s

    def client_loop() -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=max(time_limit_s, 30)) as client:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() >= deadline:
                        return
                    issued += 1
                t0 = time.perf_counter()
                try:
                    response = client.post(
                        "/v1/stylize",
                        params={"style": style, "format": fmt},
                        files={"image": (f"bench.{fmt}", payload, f"image/{fmt}")},
                    )
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    response, status = None, type(exc).__name__
                elapsed = time.perf_counter() - t0
                with lock:
                    if response is not None and response.status_code == 200:
                        latencies.append(elapsed)
                        inference_ms.append(float(response.headers.get("x-inference-ms", "nan")))
                    else:
                        errors[status] = errors.get(status, 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client_loop) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    result = summarize(latencies, wall) | {"clients": clients, "errors": errors, "wall_s": round(wall, 2)}
    if inference_ms:
        result["server_inference_p50_ms"] = round(percentile(inference_ms, 50), 1)
    return result


def print_table(report: dict) -> None:
    rows = [(f"bare {report['bare_backend']} (in-process)", report["bare_model"])]
    rows += [(f"HTTP, {level['clients']} client(s)", level) for level in report["http"]]
    header = f"{'':28} {'n':>5} {'img/s':>8} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'errors':>8}"
    print(f"\n{report['size']}x{report['size']} px, {report['device']}, bank: {report['bank']}")
    print(header)
    print("-" * len(header))
    for label, row in rows:
        if not row.get("n"):
            print(f"{label:28} {'0':>5}  (no successful requests; errors {row.get('errors')})")
            continue
        errors = sum(row.get("errors", {}).values())
        print(
            f"{label:28} {row['n']:>5} {row['throughput_per_s']:>8.2f} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} "
            f"{row['p99_ms']:>9.1f} {errors:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="bank folder (default: the bundled bank)")
    parser.add_argument("--size", type=int, default=512, help="square test image side in px")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="client counts")
    parser.add_argument(
        "--requests", type=int, default=96, help="requests per concurrency level (6 rounds of 16 clients: less tail)"
    )
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds per level (and for the bare model)")
    parser.add_argument(
        "--bare-iterations",
        type=int,
        default=96,
        help="images through the bare network (as many as --requests: 16 read up to 1.2x high on a noisy VM)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--backend",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="CINSTYLE_BACKEND for the server; the bare model runs the same one",
    )
    parser.add_argument("--server-concurrency", type=int, default=None, help="CINSTYLE_CONCURRENCY for the server")
    parser.add_argument(
        "--batch-max", type=int, default=None, help="CINSTYLE_BATCH_MAX for the server (1: no batching; batched vs not)"
    )
    parser.add_argument(
        "--format", choices=("png", "jpeg"), default="png", help="uploads and results (jpeg: quality 92 in)"
    )
    parser.add_argument(
        "--jpeg-codec",
        choices=("auto", "pillow", "torchcodec"),
        default=None,
        help="CINSTYLE_JPEG_CODEC for the server (default: its own default, torchcodec on CUDA)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    load_before = [round(v, 2) for v in os.getloadavg()]

    with tempfile.TemporaryDirectory(prefix="cinstyle-load-") as tmp:
        workdir = Path(tmp)
        bank_dir, bank_label = resolve_bank(args.checkpoint, workdir)
        image = test_image(args.size)
        buffer = io.BytesIO()
        image.save(buffer, format=args.format.upper(), **({"quality": 92} if args.format == "jpeg" else {}))
        payload = buffer.getvalue()
        style = load_bank(bank_dir).style_names[0]

        print(f"bare model: up to {args.bare_iterations} images, {args.time_limit:g} s ...", flush=True)
        backend = Settings(backend=args.backend).resolved_backend(device)
        bare = bare_model(bank_dir, image, args.bare_iterations, args.time_limit, device, backend)
        process, url, _ = start_server(bank_dir, workdir, args)
        try:
            ready = httpx.get(f"{url}/readyz").json()
            levels = []
            for clients in args.concurrency:
                print(
                    f"HTTP: {clients} client(s), up to {args.requests} requests, {args.time_limit:g} s ...", flush=True
                )
                run_level(url, style, payload, 1, 1, args.time_limit, args.format)  # warm-up
                levels.append(run_level(url, style, payload, clients, args.requests, args.time_limit, args.format))
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()

    report = {
        "benchmark": "load",
        "size": args.size,
        "device": device,
        "bank": bank_label,
        "style": style,
        "format": args.format,
        "payload_bytes": len(payload),
        "server": {
            "concurrency": ready.get("concurrency"),
            "device": ready["device"],
            "backend": ready.get("backend"),
            "batch_max": args.batch_max or "default",
            "jpeg_codec": ready.get("jpeg_codec"),
        },
        "bare_backend": backend,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "limits": {"requests_per_level": args.requests, "time_limit_s": args.time_limit},
        "bare_model": bare,
        "http": levels,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", "benchmarks/load.py", *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(),
        "load_average_before": load_before,
    }
    bare_rate, bare_p50 = bare.get("throughput_per_s"), bare.get("p50_ms")
    for level in levels:
        if bare_rate and level.get("throughput_per_s"):
            level["ratio_vs_bare"] = round(level["throughput_per_s"] / bare_rate, 3)
        if bare_p50 and level.get("p50_ms"):  # end to end (HTTP, codecs) over the network's own time
            level["p50_vs_bare_p50"] = round(level["p50_ms"] / bare_p50, 2)
    print_table(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=2))
    os.replace(tmp_out, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from model.cpu_memory import reexec_with_huge_page_malloc

    reexec_with_huge_page_malloc()  # as `cinstyle serve` runs; the peers get the same process settings
    raise SystemExit(main())
