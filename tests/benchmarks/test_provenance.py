"""A results file names the commit it measured, and whether the code differed from it."""

import shutil
import subprocess

import pytest

from benchmarks.provenance import RESULTS_DIR, git_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_the_commit_is_dirty_when_code_changed_but_not_when_only_results_did(tmp_path):
    (tmp_path / RESULTS_DIR).mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / RESULTS_DIR / "latency.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "first")
    clean = git_commit(tmp_path)
    assert len(clean) >= 7 and "+" not in clean
    (tmp_path / RESULTS_DIR / "latency.json").write_text('{"p50": 1}\n')  # a previous run's output
    assert git_commit(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == clean + "+dirty"


def test_outside_a_checkout_the_commit_is_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
