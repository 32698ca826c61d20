"""Writer processes for the crash-safety tests (tests/model/test_crash_safety.py).

They run in child processes that the test kills with SIGKILL: `write_forever` saves
two versions of a tiny bank and of a learned style alternately into the same place
until it is killed; `save_and_die` does one save and kills itself at the N-th step
that `model.bank._after_step` reports. Both are started from a forkserver that has
already imported torch, so a child starts in milliseconds.
"""

import functools
import os
import signal
from pathlib import Path

import torch

import model.bank as bank_module
from model.bank import StyleInfo, load_learned_style, remove_file_durably, save_bank, save_learned_style, style_rows
from tests.conftest import TINY_STYLES, make_tiny_network

VERSIONS = ("A", "B")
LEARNED_NAME = "learned_one"


@functools.cache
def network(version: str) -> torch.nn.Module:
    """Version A or B of the tiny bank's network (different seeds: every tensor differs)."""
    return make_tiny_network(seed=VERSIONS.index(version))


def styles(version: str) -> list[StyleInfo]:
    return [StyleInfo(name, metadata={"version": version}) for name in TINY_STYLES]


@functools.cache
def learned(version: str) -> tuple[dict[str, torch.Tensor], str, dict[str, str]]:
    """(rows, base fingerprint, metadata) of version A or B of the learned style."""
    rows = {key: row + VERSIONS.index(version) + 1 for key, row in style_rows(network("A"), 0).items()}
    return rows, version * 64, {"version": version}


def save_version(what: str, folder: Path, version: str | None) -> None:
    if what == "bank":
        save_bank(folder, network(version), styles(version), {"version": version})
    elif what == "learned":
        rows, fingerprint, metadata = learned(version)
        save_learned_style(folder / f"{LEARNED_NAME}.safetensors", LEARNED_NAME, rows, fingerprint, metadata)
    elif what == "remove-learned":
        remove_file_durably(folder / f"{LEARNED_NAME}.safetensors")
    else:
        raise ValueError(what)


def learned_version(folder: Path) -> str | None:
    """The version of the learned style file in ``folder`` (None if there is none); checks it is exact."""
    path = folder / f"{LEARNED_NAME}.safetensors"
    if not path.exists():
        return None
    name, rows, fingerprint, metadata, _ = load_learned_style(path)
    version = metadata["version"]
    expected_rows, expected_fingerprint, _ = learned(version)
    assert name == LEARNED_NAME and fingerprint == expected_fingerprint
    assert rows.keys() == expected_rows.keys() and all(rows[k].equal(expected_rows[k]) for k in rows)
    return version


def write_forever(bank_dir: Path, learned_dir: Path, first: str, banks_done, learned_done, ready) -> None:
    """Save the bank and the learned style as ``first``, then the other version, ... until killed.

    ``banks_done`` / ``learned_done`` (shared counters) count the saves that returned, so the
    test knows which versions may be on disk after the kill.
    """
    torch.set_num_threads(1)
    for version in VERSIONS:  # build both versions before the first save
        network(version), learned(version)
    start = VERSIONS.index(first)
    ready.set()
    step = 0
    while True:
        version = VERSIONS[(start + step) % 2]
        save_version("bank", bank_dir, version)
        banks_done.value += 1
        save_version("learned", learned_dir, version)
        learned_done.value += 1
        step += 1


class _KillAt:
    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, step: str, path: Path) -> None:
        self.seen += 1
        if self.seen == self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def save_and_die(what: str, folder: Path, version: str | None, kill_at: int) -> None:
    """One save of ``what``, killing this process (SIGKILL) right after its ``kill_at``-th step."""
    torch.set_num_threads(1)
    if version is not None:
        network(version), learned(version)  # built before the hook is armed
    bank_module._after_step = _KillAt(kill_at)
    save_version(what, folder, version)
