"""Large outputs: speed per megapixel, tiled vs one-pass quality, and the service's peak memory.

- ms per megapixel of `model.stylize.stylize_image` (what the service runs: uint8 in, uint8
  out, tiles above CINSTYLE_TILE_SIDE) at several sizes, per backend, in this process;
- PSNR of the tiled result (default tile and thumbnail sizes) against one pass over the whole
  image at 1536 px, where one pass still fits, per backend;
- peak resident memory (VmHWM) of a real ``cinstyle serve`` (default settings, CPU) stylizing
  one 4096 px and one 8192 px photo (CINSTYLE_MAX_OUTPUT_SIDE=8192, CINSTYLE_MAX_PIXELS raised).

The photo is a mosaic of scikit-image's public-domain sample photos, resized to each size.

    python -m benchmarks.large_output [--sizes 1024 2048 4096 8192] [--skip-torch-above 4096]

Prints a table and writes benchmarks/results/large_output.json.
"""

import argparse
import io
import json
import math
import multiprocessing
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.memory import Server, git_commit, vm_hwm_mb  # noqa: E402
from model.bank import DEFAULT_BANK_DIR, load_bank  # noqa: E402
from model.runner import make_base_runner  # noqa: E402
from model.stylize import stylize_image  # noqa: E402
from model.tiling import DEFAULT_STATS_SIDE, DEFAULT_TILE_SIDE, TilingRunner  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "large_output.json"
STYLE_INDEX = 3


def mosaic(side: int) -> Image.Image:
    """A side x side picture made of four public-domain photos (scikit-image's sample data)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.rocket(), data.chelsea()]
    half = side // 2
    canvas = Image.new("RGB", (side, side))
    for index, pixels in enumerate(photos):
        photo = Image.fromarray(pixels)
        scale = max(half / photo.width, half / photo.height)
        size = (math.ceil(photo.width * scale), math.ceil(photo.height * scale))
        photo = photo.resize(size, Image.Resampling.LANCZOS).crop((0, 0, half, half))
        canvas.paste(photo, ((index % 2) * half, (index // 2) * half))
    return canvas


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def base_runner(backend: str):
    """The bundled bank's runner: ``torch`` or ``onnx`` on the CPU, ``cuda`` (torch, fp32) on the GPU."""
    device = "cuda" if backend == "cuda" else "cpu"
    bank = load_bank(DEFAULT_BANK_DIR, device=device)
    return make_base_runner(bank.network, "torch" if backend == "cuda" else backend, threads=torch.get_num_threads())


def style_weights(runner) -> torch.Tensor:
    weights = torch.zeros(1, runner.n_styles, device=runner.device, dtype=runner.dtype)
    weights[0, STYLE_INDEX] = 1
    return weights


def speed(backend: str, sizes: list[int], skip_above: int | None, repeats: int) -> list[dict]:
    runner = TilingRunner(base_runner(backend))
    weights = style_weights(runner)
    stylize_image(runner, mosaic(256), weights)  # warm-up
    sides = [side for side in sizes if skip_above is None or side <= skip_above]
    photos = {side: mosaic(side) for side in sides}
    best: dict[int, float] = {}
    # Rounds over all sizes up to 4096 px, the best of each kept: the machine's speed drifts by 20 % over
    # minutes, and a ratio of two sizes timed minutes apart moved with it. The first run at a new size also
    # pays one-off costs (onnxruntime plans each new tile shape). 8192 px runs once, after the rounds.
    for round_index in range(repeats):
        for side in sides:
            if side > 4096 and round_index > 0:
                continue
            started = time.perf_counter()
            stylize_image(runner, photos[side], weights)
            best[side] = min(best.get(side, math.inf), time.perf_counter() - started)
    rows = []
    for side in sides:
        rows.append(
            {
                "backend": backend,
                "side": side,
                "tiled": side > runner.tile_side,
                "seconds": round(best[side], 2),
                "ms_per_megapixel": round(best[side] * 1000 / (side * side / 1e6), 1),
            }
        )
        print(f"  {backend:5} {side:5} px  {rows[-1]['ms_per_megapixel']:8.0f} ms/MP", flush=True)
    return rows


def quality(backend: str, side: int = 1536) -> dict:
    base = base_runner(backend)
    weights = style_weights(base)
    photo = mosaic(side)
    one_pass = TilingRunner(base, tile_side=1 << 16).stylize_array(photo, weights)
    row = {"backend": backend, "side": side}
    for stats_side in (512, DEFAULT_STATS_SIDE, 1024, side):
        for correct in (True, False):
            tiled = TilingRunner(base, stats_side=stats_side, correct_stats=correct).stylize_array(photo, weights)
            key = f"psnr_db_stats_side_{stats_side}" + ("" if correct else "_uncorrected")
            row[key] = round(psnr(tiled, one_pass), 2)
    print(f"  {backend:5} {side} px  {row}", flush=True)
    return row


def rss_parts_mb(pid: int) -> dict[str, float]:
    """RssAnon and RssFile of a process (MB), from /proc."""
    parts = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("RssAnon", "RssFile"):
            parts[name] = int(value.split()[0]) / 1024
    return parts


class AnonPeakSampler:
    """The largest RssAnon of a process, sampled every 10 ms in a thread until `stop` (the kernel keeps a
    high-water mark only for the whole RSS, VmHWM, which also counts shared library pages)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_parts_mb(self.pid)["RssAnon"])
            self.done.wait(0.01)

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return max(self.peak, rss_parts_mb(self.pid)["RssAnon"])


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def service_memory(sides: list[int]) -> list[dict]:
    rows = []
    style = json.loads((DEFAULT_BANK_DIR / "manifest.json").read_text())["styles"][STYLE_INDEX]["name"]
    for side in sides:
        payload = jpeg(mosaic(side))
        env = {
            "CINSTYLE_MAX_OUTPUT_SIDE": "8192",
            "CINSTYLE_MAX_PIXELS": str(70_000_000),
            "CINSTYLE_MAX_UPLOAD_BYTES": str(64 * 1024 * 1024),
        }
        with tempfile.TemporaryDirectory(prefix="cinstyle-large-") as tmp:
            server = Server(REPO, Path(tmp), env)
            try:
                idle = vm_hwm_mb(server.process.pid)
                idle_parts = rss_parts_mb(server.process.pid)
                sampler = AnonPeakSampler(server.process.pid)
                started = time.perf_counter()
                response = httpx.post(
                    f"{server.url}/v1/stylize",
                    params={"style": style},
                    files={"image": ("photo.jpg", payload)},
                    timeout=1800,
                )
                seconds = time.perf_counter() - started
                peak = vm_hwm_mb(server.process.pid)
                anon_peak = sampler.stop()
                size = Image.open(io.BytesIO(response.content)).size if response.status_code == 200 else None
            finally:
                server.stop()
        rows.append(
            {
                "side": side,
                "status": response.status_code,
                "result_size": size,
                "upload_bytes": len(payload),
                "result_bytes": len(response.content),
                "idle_rss_mb": round(idle, 1),
                "peak_rss_mb": round(peak, 1),
                # RSS = anonymous memory (the process's own) + file-backed pages (shared libraries: torch's
                # alone are 500+ MB on some machines, fewer where the kernel has reclaimed them).
                "idle_rss_anon_mb": round(idle_parts["RssAnon"], 1),
                "idle_rss_file_mb": round(idle_parts["RssFile"], 1),
                "peak_rss_anon_mb_sampled": round(anon_peak, 1),
                "seconds": round(seconds, 1),
            }
        )
        print(
            f"  service {side} px: peak {peak:.0f} MB (idle {idle:.0f} MB; anonymous: peak {anon_peak:.0f} MB, "
            f"idle {idle_parts['RssAnon']:.0f} MB), {seconds:.0f} s",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=("torch", "onnx", "cuda"),
        default=["torch", "onnx"] + (["cuda"] if torch.cuda.is_available() else []),
        help="torch and onnx run on the CPU, cuda is torch on the GPU (default: all there are)",
    )
    parser.add_argument("--skip-torch-above", type=int, default=4096, help="eager torch is slow on 2 cores")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds over the sizes up to 4096 px, best of each kept (8192: 1 run)"
    )
    parser.add_argument("--memory-sides", type=int, nargs="*", default=[4096, 8192])
    parser.add_argument("--speed-only", action="store_true", help="skip the PSNR and memory parts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    print("speed (ms per megapixel, stylize_image: uint8 in and out)", flush=True)
    speed_rows = []
    # Each backend in a fresh process: onnx timed right after eager torch's 4096 px runs in the same process
    # read about 2x slower per pixel at 4096 px than alone (allocator and thread-pool state left behind).
    context = multiprocessing.get_context("spawn")
    for backend in args.backends:
        skip = args.skip_torch_above if backend == "torch" else None
        with context.Pool(1) as pool:
            speed_rows += pool.apply(speed, (backend, args.sizes, skip, args.repeats))
    quality_rows, memory_rows = [], []
    if not args.speed_only:
        print("tiled vs one pass at 1536 px", flush=True)
        quality_rows = [quality(backend) for backend in args.backends]
        print("service peak memory", flush=True)
        memory_rows = service_memory(args.memory_sides)

    report = {
        "benchmark": "large_output",
        "command": " ".join(["python -m benchmarks.large_output", *(argv if argv is not None else sys.argv[1:])]),
        "commit": git_commit(REPO),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        },
        "settings": {"tile_side": DEFAULT_TILE_SIDE, "tile_stats_side": DEFAULT_STATS_SIDE, "style_index": STYLE_INDEX},
        "speed": speed_rows,
        "quality_1536": quality_rows,
        "service_memory": memory_rows,
    }
    for backend in args.backends:
        per_mp = {row["side"]: row["ms_per_megapixel"] for row in speed_rows if row["backend"] == backend}
        if 1024 in per_mp and 4096 in per_mp:
            report.setdefault("ratio_4096_to_1024", {})[backend] = round(per_mp[4096] / per_mp[1024], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("ratio_4096_to_1024",) if k in report}))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    from model.cpu_memory import reexec_with_huge_page_malloc

    reexec_with_huge_page_malloc()  # as `cinstyle serve` runs; the peers get the same process settings
    raise SystemExit(main())
