"""A real redis-server on a free loopback port with a temporary directory (AOF on), and `cinstyle worker`s."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.app.service_helpers import REPO, free_port, stop_process


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: .ci/run installs it (apt-get install -y redis-server)"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "yes",
                "--daemonize",
                "no",
                "--logfile",
                str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start: {(self.folder / 'redis.log').read_text()[-2000:]}")

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def stop(self) -> None:
        stop_process(self.process)


class Worker:
    """``python -m app.cli worker`` as a subprocess."""

    def __init__(self, checkpoint: Path, redis_url: str, log_path: Path, **settings: object) -> None:
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("CINSTYLE_")}
        env.update(
            {
                "CINSTYLE_CHECKPOINT": str(checkpoint),
                "CINSTYLE_REDIS_URL": redis_url,
                "CINSTYLE_DEVICE": "cpu",
                "CINSTYLE_TORCH_THREADS": "1",
                "PYTHONPATH": str(REPO),
            }
        )
        env.update({f"CINSTYLE_{key.upper()}": str(value) for key, value in settings.items()})
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> "Worker":
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker"], env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> "Worker":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, f"worker exited:\n{self.log()}"
            if "ready." in self.log():  # celery's banner line once it consumes
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout_s} s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)
