"""Peak memory of the service under bursts: slow-path submissions of huge images, and many fast-path clients.

Each scenario starts a fresh ``cinstyle serve`` on loopback (default settings), sends
its burst, lets the first job run for ``--settle`` seconds, and reads the server's
peak resident memory (``VmHWM`` in /proc/PID/status, the high-water mark since the
process started). Bounded memory means: capacity is taken before an upload is read,
uploads are decoded a few at a time, and requests beyond the bounds get 429/503 --
so the peak stays flat as the burst grows.

    python benchmarks/memory.py                          # every scenario, this checkout
    python benchmarks/memory.py --repo /tmp/old-checkout --out benchmarks/results/memory_before.json

Prints a table and writes ``benchmarks/results/memory.json``.
"""

import argparse
import io
import json
import os
import platform
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

from benchmarks.load import free_port, test_image  # noqa: E402
from benchmarks.provenance import git_commit  # noqa: E402, F401 - also imported from here
from model.bank import DEFAULT_BANK_DIR  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "memory.json"


def smooth_png(side: int) -> bytes:
    """A side x side PNG that compresses to ~100-200 KB (smooth gradients): cheap to send, costly to decode."""
    small = test_image(64).resize((side, side), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def photo_jpeg(side: int) -> bytes:
    buffer = io.BytesIO()
    test_image(side).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


class Server:
    def __init__(self, repo: Path, workdir: Path, env_extra: dict[str, str]) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CINSTYLE_")}
        env.update(
            {
                "CINSTYLE_CHECKPOINT": str(DEFAULT_BANK_DIR),
                "CINSTYLE_DATA_DIR": str(workdir / "data"),
                "CINSTYLE_DEVICE": "cpu",
                "PYTHONPATH": os.pathsep.join(filter(None, (str(repo), os.environ.get("PYTHONPATH")))),
                **env_extra,
            }
        )
        self.log = workdir / "server.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=repo,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server was not ready after 120 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def slow_burst(url: str, submissions: int, content: bytes, painting: bytes, name: str) -> dict[str, int]:
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def submit(_: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=300) as client:
                status = str(
                    client.post(
                        "/v1/stylize", files={"image": (f"p.{name}", content), "style_image": (f"s.{name}", painting)}
                    ).status_code
                )
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    with ThreadPoolExecutor(submissions) as pool:
        list(pool.map(submit, range(submissions)))
    return statuses


def fast_clients(url: str, clients: int, seconds: float, payload: bytes, style: str) -> dict[str, int]:
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(_: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while time.monotonic() < deadline:
                try:
                    status = str(
                        client.post(
                            "/v1/stylize", params={"style": style}, files={"image": ("p.png", payload)}
                        ).status_code
                    )
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, range(clients)))
    return statuses


def run_scenario(repo: Path, scenario: dict, settle_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="cinstyle-mem-") as tmp:
        server = Server(repo, Path(tmp), {})
        try:
            idle = vm_hwm_mb(server.process.pid)
            started = time.perf_counter()
            if scenario["kind"] == "slow":
                statuses = slow_burst(
                    server.url, scenario["n"], scenario["content"], scenario["painting"], scenario["ext"]
                )
                time.sleep(settle_s)  # the first job runs meanwhile
            else:
                statuses = fast_clients(
                    server.url, scenario["n"], scenario["seconds"], scenario["payload"], scenario["style"]
                )
            peak = vm_hwm_mb(server.process.pid)
            alive = httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
        finally:
            server.stop()
    return {
        "scenario": scenario["label"],
        "peak_rss_mb": round(peak, 1),
        "idle_rss_mb": round(idle, 1),
        "statuses": statuses,
        "seconds": round(time.perf_counter() - started, 1),
        "alive_after": alive,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose server is measured")
    parser.add_argument("--fast-seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the first slow job runs before reading")
    parser.add_argument("--only", nargs="*", default=None, help="scenario labels to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    huge_png = smooth_png(6300)
    jpeg_2000 = photo_jpeg(2000)
    fast_payload = io.BytesIO()
    test_image(512).save(fast_payload, format="PNG")
    style = json.loads((DEFAULT_BANK_DIR / "manifest.json").read_text())["styles"][0]["name"]
    scenarios = [
        {
            "label": "slow x8, 6300x6300 PNG",
            "kind": "slow",
            "n": 8,
            "content": huge_png,
            "painting": huge_png,
            "ext": "png",
        },
        {
            "label": "slow x40, 6300x6300 PNG",
            "kind": "slow",
            "n": 40,
            "content": huge_png,
            "painting": huge_png,
            "ext": "png",
        },
        {
            "label": "slow x40, 2000x2000 JPEGs",
            "kind": "slow",
            "n": 40,
            "content": jpeg_2000,
            "painting": jpeg_2000,
            "ext": "jpg",
        },
        {
            "label": "fast 16 clients, 512 px",
            "kind": "fast",
            "n": 16,
            "seconds": args.fast_seconds,
            "payload": fast_payload.getvalue(),
            "style": style,
        },
        {
            "label": "fast 48 clients, 512 px",
            "kind": "fast",
            "n": 48,
            "seconds": args.fast_seconds,
            "payload": fast_payload.getvalue(),
            "style": style,
        },
        {
            "label": "fast 1 client, 4096 px PNG",
            "kind": "fast",
            "n": 1,
            "seconds": args.fast_seconds,
            "payload": smooth_png(4096),
            "style": style,
        },
        {
            "label": "fast 4 clients, 4096 px PNG",
            "kind": "fast",
            "n": 4,
            "seconds": args.fast_seconds,
            "payload": smooth_png(4096),
            "style": style,
        },
    ]
    if args.only:
        scenarios = [s for s in scenarios if s["label"] in args.only]
    rows = []
    for scenario in scenarios:
        print(f"{scenario['label']} ...", flush=True)
        rows.append(run_scenario(args.repo.resolve(), scenario, args.settle))
        print(f"  peak {rows[-1]['peak_rss_mb']:.0f} MB, statuses {rows[-1]['statuses']}", flush=True)

    report = {
        "benchmark": "memory",
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "commit": git_commit(args.repo),
        "upload_bytes": {"png_6300": len(huge_png), "jpeg_2000": len(jpeg_2000)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "settings": "defaults (CINSTYLE_QUEUE_SIZE 8, 1 job worker, codec workers = cores / 2, "
        "fast-path slots = cores)",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
    }
    print(f"\n{'scenario':30} {'peak RSS MB':>12} {'idle MB':>8}  statuses")
    for row in rows:
        print(f"{row['scenario']:30} {row['peak_rss_mb']:>12.0f} {row['idle_rss_mb']:>8.0f}  {row['statuses']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    from model.cpu_memory import reexec_with_huge_page_malloc

    reexec_with_huge_page_malloc()  # as `cinstyle serve` runs; the peers get the same process settings
    raise SystemExit(main())
