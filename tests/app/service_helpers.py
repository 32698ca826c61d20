"""Helpers for the service tests: a tiny bank, a real `cinstyle serve` subprocess, images."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from model.bank import StyleInfo, save_bank
from model.transformer import TransformerConfig, TransformerNet

REPO = Path(__file__).resolve().parents[2]
STYLE_NAMES = ("alpha", "beta", "gamma")


def make_tiny_bank(path: Path, names: tuple[str, ...] = STYLE_NAMES, seed: int = 0) -> Path:
    """Random weights, but each style's gamma/beta row clearly different, so outputs differ per style."""
    generator = torch.Generator().manual_seed(seed)
    network = TransformerNet(TransformerConfig(n_styles=len(names), channels=(4, 8, 8), n_residual=1))
    with torch.no_grad():
        for layer in network.norm_layers():
            layer.gamma.copy_(1 + 0.5 * torch.randn(layer.gamma.shape, generator=generator))
            layer.beta.copy_(0.5 * torch.randn(layer.beta.shape, generator=generator))
    return save_bank(path, network, [StyleInfo(name) for name in names])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL if it has not exited after 20 s."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Server:
    """``python -m app.cli serve`` as a subprocess; settings through CINSTYLE_* variables."""

    def __init__(
        self,
        checkpoint: Path,
        data_dir: Path,
        log_path: Path,
        python_path_first: Path | None = None,
        **settings: object,
    ) -> None:
        """``python_path_first``: a folder put before the repository on PYTHONPATH (to hide a package)."""
        self.checkpoint, self.data_dir, self.log_path = checkpoint, data_dir, log_path
        self.python_path = os.pathsep.join(str(p) for p in (python_path_first, REPO) if p is not None)
        self.settings = settings
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CINSTYLE_")}
        env.update(
            {
                "CINSTYLE_CHECKPOINT": str(self.checkpoint),
                "CINSTYLE_DATA_DIR": str(self.data_dir),
                "CINSTYLE_DEVICE": "cpu",
                "CINSTYLE_TORCH_THREADS": "1",
                "PYTHONPATH": self.python_path,
            }
        )
        env.update({f"CINSTYLE_{key.upper()}": str(value) for key, value in self.settings.items()})
        return env

    def start(self, wait_ready: bool = True, timeout_s: float = 90.0) -> "Server":
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.client = httpx.Client(base_url=self.url, timeout=120.0)
        deadline = time.monotonic() + timeout_s
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.client.get(path, timeout=2.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not {'ready' if wait_ready else 'up'} after {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        stop_process(self.process)

    def kill9(self) -> None:
        assert self.process is not None
        if self.client is not None:
            self.client.close()
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def start_server(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path, name: str, **settings: object) -> Server:
    root = tmp_path_factory.mktemp(name)
    return Server(checkpoint, root / "data", root / "server.log", **settings).start()


# -- images ----------------------------------------------------------------------------------------------------------


def photo(width: int = 48, height: int = 32, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth gradient with some noise (compresses like a photo, not like flat colour)."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    rgb = torch.stack([x, y, (x + y) / 2]) * 200 + 25 * torch.rand(3, height, width, generator=generator)
    image = Image.fromarray(rgb.clamp(0, 255).byte().permute(1, 2, 0).numpy(), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"], body
    return body["error"]
