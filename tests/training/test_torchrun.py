"""Two-process DistributedDataParallel training on the CPU (gloo) through torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.bank import load_bank
from tests.training.conftest import write_paintings, write_photos

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_torchrun_two_processes_train_a_bank(tmp_path):
    styles = write_paintings(tmp_path / "styles", ["one", "two"])
    write_photos(tmp_path / "photos", 4)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "-m",
        "app.cli",
        "train",
        "--styles",
        *map(str, styles),
        "--content",
        str(tmp_path / "photos"),
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "1",
        "--image-size",
        "32",
        "--style-size",
        "64",
        "--channels",
        "4",
        "8",
        "8",
        "--n-residual",
        "1",
        "--sample-every",
        "2",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "bank:" in completed.stdout and "(step 4)" in completed.stdout

    bank = load_bank(out / "bank")
    assert bank.style_names == ["one", "two"]
    assert bank.provenance["steps"] == 4
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_000002.png", "step_000004.png"]
    assert (out / "state.safetensors").is_file()
