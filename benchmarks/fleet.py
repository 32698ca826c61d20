"""Fleet-mode benchmark: jobs per minute with 1 and 2 `cinstyle worker`s, and style hot-reload latency.

Starts everything on this machine, on loopback: a real ``redis-server`` (AOF on, a
temporary directory, a free port), two API replicas (``python -m app.cli serve``
with ``CINSTYLE_REDIS_URL``; A takes the submissions, B serves the learned styles)
and ``cinstyle worker`` processes (one torch thread each unless told otherwise).

(a) Throughput: a burst of ``--burst`` slow-path jobs (a ``--size`` px photo and a
    painting, ``CINSTYLE_SLOW_STEPS=--steps``) submitted to A at once; the time
    from the first submission to the last job done gives jobs per minute. One
    row per worker configuration (``--configs``: WORKERSxTHREADS, default 1x1,
    2x1 and 1x2, so that two workers are compared with one worker that has the
    same two cores). Each worker is warmed up first (its loss network loaded).
(b) Hot reload: a style is learned through A (``POST /v1/styles``, a short
    learn job); a thread polls ``POST /v1/stylize?style=NAME`` on B every
    ``--poll-ms`` ms from before the submission. Reported: the time from the job
    record's ``finished_at`` (written by the worker) to the first 200 from B, and
    the time from ``DELETE /v1/styles/NAME`` through B to A answering 422.
    Repeated ``--repeats`` times; median and max.
(c) Redis memory of a result: one 512 px slow-path job each as PNG and JPEG;
    ``MEMORY USAGE`` of the job record and of the result key (what Redis holds
    until ``CINSTYLE_RESULT_TTL_S``).

Prints a table per part and writes ``benchmarks/results/fleet.json``.

    python benchmarks/fleet.py                        # defaults: bundled bank, 128 px, 20 steps, 12 jobs
    python benchmarks/fleet.py --configs 1x1 2x1 --burst 6 --repeats 3 --no-memory   # a quick look

The bank is the bundled one (``model/checkpoints/default``) unless ``--checkpoint``
names another; without a bundled bank (a checkout before training) a bank with
the default architecture and random weights is written: the speed is the same.
Everything started is stopped at the end (and on Ctrl-C).
"""

import argparse
import io
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.provenance import git_commit  # noqa: E402
from model.bank import DEFAULT_BANK_DIR, StyleInfo, save_bank  # noqa: E402
from model.transformer import TransformerConfig, TransformerNet  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "fleet.json"
PAINTING = REPO.parent / "shared" / "data" / "styles" / "van_gogh_starry_night.jpg"
API_KEY = "fleet-benchmark-key"
TERMINAL = ("done", "failed", "cancelled")


# -- processes ---------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process with its log in the work folder; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> "Process":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def cinstyle_env(settings: dict[str, object]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINSTYLE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({f"CINSTYLE_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def start_redis(folder: Path) -> tuple[Process, int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install -y redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = Process(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ],
        os.environ.copy(),
        folder / "redis.log",
    ).start()
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return proc, port
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start:\n{proc.log()}")


def start_api(name: str, settings: dict[str, object], workdir: Path) -> tuple[Process, str]:
    port = free_port()
    proc = Process(
        name,
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cinstyle_env({**settings, "data_dir": workdir / f"{name}-data"}),
        workdir / f"{name}.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.log()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after 120 s:\n{proc.log()}")


def start_worker(name: str, settings: dict[str, object], workdir: Path) -> Process:
    proc = Process(
        name, [sys.executable, "-m", "app.cli", "worker"], cinstyle_env(settings), workdir / f"{name}.log"
    ).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.log()}")
        if " ready." in proc.log():  # Celery's line once it consumes
            return proc
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready after 120 s:\n{proc.log()}")


class CpuMeter:
    """Core-seconds the whole machine spent busy during a phase, and how much of it was not this benchmark.

    Other processes on a shared machine compete for its cores; this says how much they took
    (Linux /proc; elsewhere the numbers are absent)."""

    def __init__(self, processes: list[Process]) -> None:
        self.processes = processes
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: tuple[int, int, int] | None = None
        self._t0 = 0.0

    def _busy(self) -> int:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return user + nice + system + irq + softirq + steal

    def _ours(self, only: str = "") -> int:
        pids = [os.getpid()] if not only else []
        pids += [p.process.pid for p in self.processes if p.alive() and p.process is not None and only in p.name]
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        return total

    def start(self) -> "CpuMeter":
        try:
            self._start = (self._busy(), self._ours(), self._ours(only="worker"))
        except OSError:
            self._start = None
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict:
        if self._start is None:
            return {}
        try:
            busy, ours = self._busy() - self._start[0], self._ours() - self._start[1]
            workers = self._ours(only="worker") - self._start[2]
        except OSError:
            return {}
        wall = time.monotonic() - self._t0
        return {
            "wall_s": round(wall, 1),
            "machine_busy_core_s": round(busy / self.tick, 1),
            "benchmark_core_s": round(ours / self.tick, 1),
            "other_processes_core_s": round(max(0, busy - ours) / self.tick, 1),
            "workers_core_s": round(workers / self.tick, 1),
        }


# -- inputs -----------------------------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def content_photo(size: int) -> tuple[Image.Image, str]:
    """scikit-image's astronaut (public domain, shipped with the package), size x size."""
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS), "skimage.data.astronaut"


def painting(size: int) -> tuple[Image.Image, str]:
    """The Starry Night from ../shared/data/styles when present, else a generated pattern."""
    if PAINTING.is_file():
        with Image.open(PAINTING) as image:
            return image.convert("RGB").resize((size, size), Image.LANCZOS), str(PAINTING.relative_to(REPO.parent))
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([128 + 120 * np.sin(x / 5.0), 128 + 120 * np.sin((x + y) / 7.0), 128 + 120 * np.cos(y / 4.0)], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB"), "generated stripes"


def resolve_bank(checkpoint: Path | None, workdir: Path) -> tuple[Path, str]:
    if checkpoint is not None:
        return checkpoint, str(checkpoint)
    if (DEFAULT_BANK_DIR / "manifest.json").is_file():
        return DEFAULT_BANK_DIR, "bundled (model/checkpoints/default)"
    network = TransformerNet(TransformerConfig(n_styles=4))
    path = save_bank(workdir / "random-bank", network, [StyleInfo(f"style{i}") for i in range(4)])
    return path, "random weights, default architecture (no bundled bank)"


# -- jobs -------------------------------------------------------------------------------------------------------------


def submit_slow(client: httpx.Client, photo: bytes, style: bytes, fmt: str = "png") -> str:
    response = client.post(
        "/v1/stylize",
        params={"format": fmt},
        files={"image": ("photo.png", photo), "style_image": ("painting.png", style)},
    )
    if response.status_code != 202:
        raise RuntimeError(f"slow-path submission -> {response.status_code}: {response.text[:300]}")
    return response.json()["id"]


def wait_jobs(client: httpx.Client, ids: list[str], timeout_s: float, interval_s: float = 0.25) -> dict[str, dict]:
    """Poll until every job has ended; returns the final records (a failed job is an error).

    Jobs end roughly in submission order, so each pass asks only up to the first job still
    going: a few requests a second, so that polling takes next to no CPU from the workers
    (the times reported come from the records, not from when the poll saw them)."""
    records: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(records) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(ids) - len(records)} job(s) not done after {timeout_s} s")
        for job_id in ids:
            if job_id in records:
                continue
            record = client.get(f"/v1/jobs/{job_id}").json()
            if record["status"] not in TERMINAL:
                break
            if record["status"] != "done":
                raise RuntimeError(f"job {job_id} ended {record['status']}: {record.get('error')}")
            records[job_id] = record
        else:
            continue
        time.sleep(interval_s)
    return records


def worker_of(redis_client: redis.Redis, job_id: str) -> str:
    # the claim records ``host:pid`` as JSON, like every field of the record
    raw = redis_client.hget(f"cinstyle:job:{job_id}", "worker")
    return raw.decode().strip('"') if raw else "?"


def run_burst(
    client: httpx.Client, redis_client: redis.Redis, photo: bytes, style: bytes, burst: int, timeout_s: float
) -> dict:
    t0 = time.time()
    ids = [submit_slow(client, photo, style) for _ in range(burst)]
    submitted_s = time.time() - t0
    records = wait_jobs(client, ids, timeout_s)
    last_finish = max(r["finished_at"] for r in records.values())
    wall_s = last_finish - t0
    run_s = [r["finished_at"] - r["started_at"] for r in records.values()]
    per_worker: dict[str, int] = {}
    for job_id in ids:
        who = worker_of(redis_client, job_id)
        per_worker[who] = per_worker.get(who, 0) + 1
    return {
        "jobs": burst,
        "wall_s": round(wall_s, 2),
        "jobs_per_min": round(burst / wall_s * 60, 2),
        "submit_s": round(submitted_s, 2),
        "job_run_s_median": round(statistics.median(run_s), 2),
        "job_run_s_max": round(max(run_s), 2),
        "jobs_per_worker": sorted(per_worker.values(), reverse=True),
    }


def warm_up(client: httpx.Client, redis_client: redis.Redis, photo: bytes, style: bytes, workers: int) -> int:
    """One job per worker at once (prefetch 1: each idle worker takes one); returns how many workers ran one."""
    ids = [submit_slow(client, photo, style) for _ in range(workers)]
    wait_jobs(client, ids, 600)
    return len({worker_of(redis_client, job_id) for job_id in ids})


class Poller(threading.Thread):
    """POSTs /v1/stylize?style=NAME to a replica every interval until it answers ``want``; keeps the times."""

    def __init__(self, url: str, style: str, image: bytes, want: int, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.style, self.image, self.want, self.interval_s = url, style, image, want, interval_s
        self.stop_event = threading.Event()
        self.hit: tuple[float, float] | None = None  # (sent, received) wall-clock times of the first `want`
        self.requests = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop_event.is_set():
                sent = time.time()
                status = client.post(
                    "/v1/stylize", params={"style": self.style}, files={"image": ("p.png", self.image)}
                ).status_code
                received = time.time()
                self.requests += 1
                if status == self.want:
                    self.hit = (sent, received)
                    return
                self.stop_event.wait(max(0.0, self.interval_s - (received - sent)))


def reload_round(
    a: httpx.Client,
    redis_client: redis.Redis,
    b_url: str,
    a_url: str,
    style_png: bytes,
    tiny_png: bytes,
    poll_s: float,
    timeout_s: float,
) -> dict:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    poller = Poller(b_url, name, tiny_png, 200, poll_s)
    poller.start()
    response = a.post(
        "/v1/styles",
        data={"name": name},
        headers={"X-API-Key": API_KEY},
        files={"style_image": ("painting.png", style_png)},
    )
    if response.status_code != 202:
        poller.stop_event.set()
        raise RuntimeError(f"POST /v1/styles -> {response.status_code}: {response.text[:300]}")
    job_id = response.json()["id"]
    record = wait_jobs(a, [job_id], timeout_s, interval_s=0.05)[job_id]
    poller.join(10)
    poller.stop_event.set()
    if poller.hit is None:
        raise RuntimeError(f"replica B did not serve {name} within 10 s of its learn job ending")
    learned_after_s = poller.hit[1] - record["finished_at"]
    style_bytes = int(redis_client.hstrlen("cinstyle:styles", name))
    # and back: delete through B, until A refuses the name
    deleted = httpx.delete(f"{b_url}/v1/styles/{name}", headers={"X-API-Key": API_KEY}, timeout=30)
    deleted_at = time.time()
    if deleted.status_code != 204:
        raise RuntimeError(f"DELETE /v1/styles/{name} -> {deleted.status_code}: {deleted.text[:300]}")
    gone = Poller(a_url, name, tiny_png, 422, poll_s)
    gone.start()
    gone.join(10)
    gone.stop_event.set()
    if gone.hit is None:
        raise RuntimeError(f"replica A still served {name} 10 s after it was deleted through B")
    return {
        "style": name,
        "learn_job_s": round(record["finished_at"] - record["started_at"], 2),
        "served_by_b_after_s": round(learned_after_s, 3),
        "poll_request_ms": round((poller.hit[1] - poller.hit[0]) * 1000, 1),
        "gone_from_a_after_s": round(gone.hit[1] - deleted_at, 3),
        "style_bytes_in_redis": style_bytes,
    }


def result_memory(
    client: httpx.Client,
    redis_client: redis.Redis,
    photo: bytes,
    style: bytes,
    formats: tuple[str, ...],
    timeout_s: float,
) -> list[dict]:
    """One slow-path job per format, submitted together (one per worker); Redis memory of what each leaves."""
    ids = [submit_slow(client, photo, style, fmt) for fmt in formats]
    # the uploads wait in Redis (as PNG) from the submission to the job's end
    inputs = [int(redis_client.memory_usage(f"cinstyle:job:{job_id}:inputs") or 0) for job_id in ids]
    records = wait_jobs(client, ids, timeout_s)
    rows = []
    for fmt, job_id, inputs_bytes in zip(formats, ids, inputs, strict=True):
        record = records[job_id]
        result = client.get(f"/v1/jobs/{job_id}/result")
        record_key, result_key = f"cinstyle:job:{job_id}", f"cinstyle:job:{job_id}:result"
        rows.append(
            {
                "format": fmt,
                "size": f"{record['result']['width']}x{record['result']['height']}",
                "result_bytes": len(result.content),
                "redis_result_key_bytes": int(redis_client.memory_usage(result_key) or 0),
                "redis_record_bytes": int(redis_client.memory_usage(record_key) or 0),
                "redis_inputs_key_bytes_while_queued_or_running": inputs_bytes,
                "ttl_s": int(redis_client.ttl(record_key)),
                "job_run_s": round(record["finished_at"] - record["started_at"], 1),
            }
        )
    return rows


# -- report -----------------------------------------------------------------------------------------------------------


def print_tables(report: dict) -> None:
    print(f"\nfleet benchmark: {report['machine']['cpus']} CPU(s), bank {report['bank']}")
    settings = report["settings"]
    print(
        f"\n(a) slow-path burst: {settings['burst']} jobs, {settings['size']} px, "
        f"CINSTYLE_SLOW_STEPS={settings['slow_steps']}, one API replica taking the submissions"
    )
    print(
        f"{'workers x torch threads':>24} {'wall s':>8} {'jobs/min':>9} {'job s (median)':>15} {'per worker':>11} "
        f"{'worker core-s/job':>18} {'others core-s':>14}"
    )
    for row in report["throughput"]:
        print(
            f"{row['config']:>24} {row['wall_s']:>8.1f} {row['jobs_per_min']:>9.1f} {row['job_run_s_median']:>15.2f} "
            f"{'/'.join(map(str, row['jobs_per_worker'])):>11} {row.get('worker_core_s_per_job', '?'):>18} "
            f"{row['cpu'].get('other_processes_core_s', '?'):>14}"
        )
    print("  (worker core-s/job: CPU the workers spent per job; others core-s: CPU time other processes on this")
    print("   machine took during the burst)")
    if report.get("reload"):
        reload = report["reload"]
        print(
            f"\n(b) learned style hot reload, {len(reload['rounds'])} rounds, B polled every {settings['poll_ms']} ms"
        )
        print(f"{'':>36} {'median':>8} {'max':>8}")
        for key, label in (
            ("served_by_b_after_s", "learn job finished -> B serves it"),
            ("gone_from_a_after_s", "DELETE through B -> A answers 422"),
            ("learn_job_s", "learn job run time"),
        ):
            print(f"{label:>36} {reload[key]['median']:>7.3f}s {reload[key]['max']:>7.3f}s")
    if report.get("memory"):
        print("\n(c) Redis memory of one finished slow-path job (MEMORY USAGE)")
        print(
            f"{'format':>7} {'size':>9} {'result bytes':>13} {'result key':>11} {'record':>8} {'inputs (queued)':>16}"
        )
        for row in report["memory"]:
            print(
                f"{row['format']:>7} {row['size']:>9} {row['result_bytes']:>13} {row['redis_result_key_bytes']:>11} "
                f"{row['redis_record_bytes']:>8} {row['redis_inputs_key_bytes_while_queued_or_running']:>16}"
            )


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3), "min": round(min(values), 3)}


def parse_config(text: str) -> tuple[int, int]:
    workers, _, threads = text.partition("x")
    return int(workers), int(threads or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, help="a bank folder (default: the bundled bank)")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["1x1", "2x1", "1x2"],
        help="worker configurations WORKERSxTORCH_THREADS (default: 1x1 2x1 1x2)",
    )
    parser.add_argument("--burst", type=int, default=12, help="slow-path jobs per burst")
    parser.add_argument("--size", type=int, default=128, help="photo and painting side for the burst, px")
    parser.add_argument("--steps", type=int, default=20, help="CINSTYLE_SLOW_STEPS")
    parser.add_argument("--repeats", type=int, default=5, help="hot-reload rounds (0: skip)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="how often B is asked for the new style")
    parser.add_argument("--learn-steps", type=int, default=20, help="CINSTYLE_LEARN_STEPS of the learn jobs")
    parser.add_argument("--memory-size", type=int, default=512, help="side of the memory-measure job, px")
    parser.add_argument("--no-memory", action="store_true", help="skip the result-memory measure")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    configs = [parse_config(text) for text in args.configs]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the children on SIGTERM too
    workdir = Path(tempfile.mkdtemp(prefix="cinstyle-fleet-bench-"))
    load_before = os.getloadavg()
    started: list[Process] = []
    try:
        bank_dir, bank_note = resolve_bank(args.checkpoint, workdir)
        redis_proc, redis_port = start_redis(workdir / "redis")
        started.append(redis_proc)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        redis_client = redis.Redis(port=redis_port, socket_timeout=10)
        common = {
            "checkpoint": bank_dir,
            "redis_url": redis_url,
            "device": "cpu",
            "slow_steps": args.steps,
            "queue_size": max(32, args.burst + 4),
            "learn_steps": args.learn_steps,
            "learn_batch_size": 1,
            "learn_image_size": 64,
            "api_key": API_KEY,
            "result_ttl_s": 3600,
        }
        api = {**common, "torch_threads": 1, "concurrency": 1}
        a_proc, a_url = start_api("api-a", api, workdir)
        b_proc, b_url = start_api("api-b", api, workdir)
        started += [a_proc, b_proc]
        a = httpx.Client(base_url=a_url, timeout=120)

        photo_img, photo_note = content_photo(args.size)
        style_img, style_note = painting(args.size)
        photo, style = encode(photo_img), encode(style_img)

        throughput = []
        worker_count = 0
        for n_workers, threads in configs:
            workers = [
                start_worker(
                    f"worker{worker_count + i}", {**common, "torch_threads": threads, "worker_concurrency": 1}, workdir
                )
                for i in range(n_workers)
            ]
            worker_count += n_workers
            started += workers
            warmed = warm_up(a, redis_client, photo, style, n_workers)
            meter = CpuMeter(started).start()
            row = {
                "config": f"{n_workers} x {threads}",
                "workers": n_workers,
                "torch_threads": threads,
                "warmed_workers": warmed,
                **run_burst(a, redis_client, photo, style, args.burst, timeout_s=1800),
            }
            row["cpu"] = meter.stop()
            if row["cpu"]:
                # CPU the workers spent per job: what a job costs whatever else runs on the machine
                row["worker_core_s_per_job"] = round(row["cpu"]["workers_core_s"] / row["jobs"], 2)
            print(
                f"  {row['config']}: {row['jobs']} jobs in {row['wall_s']} s = {row['jobs_per_min']} jobs/min "
                f"(per worker {row['jobs_per_worker']})",
                flush=True,
            )
            throughput.append(row)
            for worker in workers:
                worker.stop()
                started.remove(worker)

        # (b) and (c) with two one-thread workers
        workers = [
            start_worker(f"worker{worker_count + i}", {**common, "torch_threads": 1, "worker_concurrency": 1}, workdir)
            for i in range(2)
        ]
        started += workers
        rounds = []
        tiny = encode(content_photo(32)[0])
        meter = CpuMeter(started).start()
        for i in range(args.repeats):
            rounds.append(reload_round(a, redis_client, b_url, a_url, style, tiny, args.poll_ms / 1000, timeout_s=600))
            print(
                f"  reload round {i + 1}: served by B {rounds[-1]['served_by_b_after_s']} s after the job ended, "
                f"gone from A {rounds[-1]['gone_from_a_after_s']} s after DELETE",
                flush=True,
            )
        reload = None
        if rounds:
            reload = {
                "rounds": rounds,
                **{
                    key: summary([r[key] for r in rounds])
                    for key in ("served_by_b_after_s", "gone_from_a_after_s", "learn_job_s")
                },
                "cpu": meter.stop(),
            }
        memory = []
        if not args.no_memory:
            big_photo = encode(content_photo(args.memory_size)[0])
            big_style = encode(painting(args.memory_size)[0])
            memory = result_memory(a, redis_client, big_photo, big_style, ("png", "jpeg"), timeout_s=1800)
            for row in memory:
                print(f"  memory {row['format']}: {row}", flush=True)

        report = {
            "benchmark": "fleet",
            "command": " ".join(["python", "benchmarks/fleet.py", *(argv if argv is not None else sys.argv[1:])]),
            "commit": git_commit(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "processor": platform.processor() or platform.machine(),
                "redis": redis_client.info("server")["redis_version"],
                # other processes on the machine compete for its cores: the 1-minute load average
                # before the run and at its end, beside the run's own processes
                "loadavg_1min_before": round(load_before[0], 2),
                "loadavg_1min_after": round(os.getloadavg()[0], 2),
            },
            "bank": bank_note,
            "inputs": {"photo": photo_note, "painting": style_note},
            "settings": {
                "burst": args.burst,
                "size": args.size,
                "slow_steps": args.steps,
                "learn_steps": args.learn_steps,
                "learn_batch_size": 1,
                "learn_image_size": 64,
                "poll_ms": args.poll_ms,
                "api_replicas": 2,
                "api_torch_threads": 1,
                "worker_concurrency": 1,
                "device": "cpu",
            },
            "throughput": throughput,
            "reload": reload,
            "memory": memory,
        }
        print_tables(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = args.out.with_suffix(".json.tmp")
        tmp_out.write_text(json.dumps(report, indent=2) + "\n")
        tmp_out.replace(args.out)
        print(f"\nwrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
        return 0
    except Exception:
        for proc in started:
            if proc.name != "redis":
                print(f"--- {proc.name} log (tail) ---\n{proc.log()[-1500:]}", file=sys.stderr)
        raise
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
