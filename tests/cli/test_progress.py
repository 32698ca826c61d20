"""Long CLI work shows a tqdm bar with ETA on a terminal, and stays quiet on a pipe.

The commands run in a subprocess whose stderr is a pseudo-terminal (a real tty,
so nothing is forced); the same commands with stderr on a pipe print no bar.
"""

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import gradient_image

pty = pytest.importorskip("pty")

pytestmark = pytest.mark.slow


def run_with_tty_stderr(args: list[str], timeout_s: float = 300.0) -> tuple[int, str, str]:
    """Run ``cinstyle ARGS`` with stderr on a pseudo-terminal; (exit status, stdout, what the terminal showed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the last writer closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif process.poll() is not None:
                break
        stdout = process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout.decode(), shown.decode(errors="replace")


def run_with_pipe_stderr(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    photo, painting = tmp_path / "photo.png", tmp_path / "painting.png"
    gradient_image(40, 32).save(photo)
    gradient_image(32, 32).rotate(90).save(painting)
    return photo, painting


def test_slow_path_stylize_shows_a_bar_with_eta(tiny_bank, images, tmp_path):
    photo, painting = images
    args = [
        "stylize",
        str(photo),
        "--style-image",
        str(painting),
        "-o",
        str(tmp_path / "out.png"),
        "--checkpoint",
        str(tiny_bank),
        "--device",
        "cpu",
        "--steps",
        "3",
    ]
    status, stdout, terminal = run_with_tty_stderr(args)
    assert status == 0, terminal
    assert (tmp_path / "out.png").is_file() and stdout.strip() == str(tmp_path / "out.png")
    assert "slow path:" in terminal and "100%" in terminal, terminal
    assert "<00:00]" in terminal  # elapsed<remaining: the ETA, 0 s left at the end

    quiet = run_with_pipe_stderr(args)
    assert quiet.returncode == 0, quiet.stderr
    assert "slow path:" not in quiet.stderr and "100%" not in quiet.stderr


def test_add_style_shows_a_bar_with_eta(tiny_bank, images, tmp_path):
    _, painting = images
    content = tmp_path / "content"
    content.mkdir()
    for seed in range(2):
        gradient_image(64, 48).rotate(90 * seed).save(content / f"photo{seed}.png")
    args = [
        "add-style",
        "--bank",
        str(tiny_bank),
        "--style",
        str(painting),
        "--name",
        "striped",
        "--content",
        str(content),
        "--steps",
        "3",
        "--device",
        "cpu",
    ]
    status, stdout, terminal = run_with_tty_stderr([*args, "--out", str(tmp_path / "striped.safetensors")])
    assert status == 0, terminal
    assert (tmp_path / "striped.safetensors").is_file()
    assert "add-style striped:" in terminal and "100%" in terminal and "3/3" in terminal, terminal
    assert "step/s" in terminal or "s/step" in terminal  # the unit is steps
    assert "<00:00" in terminal

    quiet = run_with_pipe_stderr([*args, "--out", str(tmp_path / "quiet")])
    assert quiet.returncode == 0, quiet.stderr
    assert "add-style striped:" not in quiet.stderr and "3/3" not in quiet.stderr


def test_texture_writes_a_texture_and_shows_a_bar_with_eta(images, tmp_path):
    _, painting = images
    out = tmp_path / "texture.png"
    args = ["texture", str(painting), "-o", str(out), "--size", "40x32", "--layers", "relu2_1", "--tileable"]
    status, stdout, terminal = run_with_tty_stderr([*args, "--steps", "3", "--device", "cpu"])
    assert status == 0, terminal
    assert stdout.strip() == str(out)
    from PIL import Image

    assert Image.open(out).size == (40, 32)
    assert "texture:" in terminal and "100%" in terminal and "<00:00]" in terminal, terminal

    quiet = run_with_pipe_stderr([*args, "--steps", "2", "--device", "cpu"])
    assert quiet.returncode == 0 and "texture:" not in quiet.stderr, quiet.stderr
    bad = run_with_pipe_stderr(["texture", str(painting), "-o", str(out), "--layers", "relu4_2"])
    assert bad.returncode == 2 and "relu1_1" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_with_pipe_stderr(["texture", str(painting), "-o", str(out), "--size", "10x512"])
    assert bad.returncode == 2 and "16 px" in bad.stderr
