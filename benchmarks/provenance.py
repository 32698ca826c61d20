"""Where a benchmark result came from: the command, the commit, the machine and the date (every results file
records them, so a figure in the docs can be traced to its run)."""

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = "benchmarks/results"  # relative to the repository root


def git_commit(repo: Path = REPO) -> str:
    """The short commit of ``repo``'s HEAD, with "+dirty" when tracked files other than benchmark results differ
    from it ("unknown" outside a git checkout). Results files are left out: one run's output, not yet committed,
    does not change what the next run measures."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--", ".", f":!{RESULTS_DIR}"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance(command: str, argv: list[str] | None = None) -> dict:
    """``command``: how the script is started (e.g. ``python -m benchmarks.latency``); ``argv`` its arguments
    (default: this process's)."""
    import torch

    arguments = sys.argv[1:] if argv is None else argv
    return {
        "command": " ".join([command, *arguments]),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
