"""A kill -9 at any moment of a save leaves the old or the new bank / learned style, loadable.

Writers run in child processes (from a forkserver that has imported torch already) and are
killed with SIGKILL: at random moments of a loop of saves, and right after every single
create / write / fsync / rename / unlink step of one save (via `model.bank._after_step`).
"""

import json
import multiprocessing
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

import model.bank as bank_module
from model.bank import MANIFEST_FILE, WEIGHTS_FILE, bank_weights_path, load_bank, save_bank
from model.errors import BankFormatError
from tests.model import crash_writer
from tests.model.crash_writer import LEARNED_NAME, VERSIONS, learned_version, network, save_version

KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def ctx():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.model.crash_writer"])  # children start without importing torch
    return context


def bank_version(folder: Path) -> str | None:
    """ "A" or "B" if ``folder`` holds exactly that bank; None if it holds no bank yet. Anything else fails."""
    if not (folder / MANIFEST_FILE).exists():
        with pytest.raises(BankFormatError, match="not (a bank folder|a cinstyle bank)"):
            load_bank(folder)
        return None
    bank = load_bank(folder)
    version = bank.provenance["version"]
    assert version in VERSIONS
    expected = network(version).state_dict()
    actual = bank.network.state_dict()
    assert actual.keys() == expected.keys()
    assert all(actual[key].equal(expected[key]) for key in expected), f"bank {version} is not exactly {version}"
    assert [s.metadata["version"] for s in bank.styles] == [version] * 3
    return version


def weights_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("weights*.safetensors")) if folder.is_dir() else []


def after(saves: int, before: str | None, first: str) -> str | None:
    """What is on disk after ``saves`` completed saves of first, other, first, ... over ``before``."""
    return before if saves == 0 else VERSIONS[(VERSIONS.index(first) + saves - 1) % 2]


def test_random_kills_of_a_writer_leave_the_old_or_the_new_bank(ctx, tmp_path):
    rounds, rng = 48, random.Random(14)
    bank_dir, learned_dir = tmp_path / "bank", tmp_path / "learned"
    bank_before = learned_before = None
    outcomes: Counter[str] = Counter()
    saves_per_writer = []
    started = time.monotonic()
    for round_ in range(rounds):
        first = "B" if bank_before == "A" else "A"
        banks_done, learned_done, ready = ctx.RawValue("q", 0), ctx.RawValue("q", 0), ctx.Event()
        writer = ctx.Process(
            target=crash_writer.write_forever,
            daemon=True,
            args=(bank_dir, learned_dir, first, banks_done, learned_done, ready),
        )
        writer.start()
        deadline = time.monotonic() + 60
        while not ready.wait(0.05):
            assert writer.is_alive(), f"the writer died before it was ready (exit code {writer.exitcode})"
            assert time.monotonic() < deadline, "the writer did not start"
        if round_ % 4 == 3:  # every 4th writer gets a bank save done first, however slow the disk is today
            while banks_done.value == 0 and writer.is_alive() and time.monotonic() < deadline:
                time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        writer.kill()
        writer.join(30)
        assert writer.exitcode == KILLED, f"the writer failed on its own (exit code {writer.exitcode})"
        n_bank, n_learned = banks_done.value, learned_done.value
        saves_per_writer.append(n_bank)

        bank_now = bank_version(bank_dir)
        # Done saves are on disk; the save in progress at the kill may have committed or not.
        assert bank_now in {after(n_bank, bank_before, first), after(n_bank + 1, bank_before, first)}
        learned_now = learned_version(learned_dir)
        assert learned_now in {after(n_learned, learned_before, first), after(n_learned + 1, learned_before, first)}
        assert len(weights_files(bank_dir)) <= 2  # only two contents exist; stale ones are cleaned by every save

        outcomes[f"bank {'unchanged' if bank_now == bank_before else 'changed'}"] += 1
        outcomes[f"bank {bank_now}"] += 1
        outcomes[f"learned {learned_now}"] += 1
        outcomes["kills inside a writer's first bank save"] += n_bank == 0
        bank_before, learned_before = bank_now, learned_now

    elapsed = time.monotonic() - started
    print(
        f"\n{rounds} SIGKILLs in {elapsed:.1f} s: {dict(sorted(outcomes.items()))}; "
        f"bank saves completed per writer: min {min(saves_per_writer)}, max {max(saves_per_writer)}"
    )
    assert sum(saves_per_writer) >= rounds // 4 and outcomes["bank A"] and outcomes["bank B"]
    assert bank_before is not None and learned_before is not None
    # The next save after all those kills cleans up: temp files and stale weights are gone.
    save_version("bank", bank_dir, "A")
    assert sorted(p.name for p in bank_dir.iterdir()) == sorted([MANIFEST_FILE, bank_weights_path(bank_dir).name])
    assert bank_version(bank_dir) == "A"


def _legacy_bank(folder: Path) -> None:
    """Bank A as the older save_bank wrote it (and as the bundled bank is): weights.safetensors."""
    save_version("bank", folder, "A")
    bank_weights_path(folder).rename(folder / WEIGHTS_FILE)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["weights_file"] = WEIGHTS_FILE
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))


# scenario -> (how to prepare the folder, what the child does, the version it writes, the commit step)
SCENARIOS = {
    "bank over a bank": (lambda d: save_version("bank", d, "A"), "bank", "B", ("replaced", MANIFEST_FILE)),
    "bank over a legacy bank": (_legacy_bank, "bank", "B", ("replaced", MANIFEST_FILE)),
    "same bank again": (lambda d: save_version("bank", d, "A"), "bank", "A", ("replaced", MANIFEST_FILE)),
    "bank into a new folder": (lambda d: None, "bank", "B", ("replaced", MANIFEST_FILE)),
    "new learned style": (lambda d: None, "learned", "A", ("replaced", f"{LEARNED_NAME}.safetensors")),
    "learned style over another": (
        lambda d: save_version("learned", d, "A"),
        "learned",
        "B",
        ("replaced", f"{LEARNED_NAME}.safetensors"),
    ),
    "learned style removed": (
        lambda d: save_version("learned", d, "A"),
        "remove-learned",
        None,
        ("unlinked", f"{LEARNED_NAME}.safetensors"),
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_kill_after_any_step_of_a_save_leaves_the_old_or_the_new_version(ctx, tmp_path, monkeypatch, scenario):
    prepare, what, version, commit = SCENARIOS[scenario]
    template = tmp_path / "template" / "folder"
    template.parent.mkdir()
    prepare(template)
    read = bank_version if what == "bank" else learned_version
    old = read(template)

    def fresh_copy(name: str) -> Path:
        folder = tmp_path / name / "folder"
        if template.exists():
            shutil.copytree(template, folder)
        else:
            folder.parent.mkdir()
        return folder

    steps: list[tuple[str, str]] = []  # a dry run in this process lists the steps of the save
    monkeypatch.setattr(bank_module, "_after_step", lambda step, path: steps.append((step, path.name)))
    save_version(what, fresh_copy("dry-run"), version)
    monkeypatch.undo()
    assert commit in steps and steps.count(commit) == 1, steps
    assert steps[-1][0] == "dir-synced"  # the last change is made durable
    if what == "bank" and old not in (None, version):  # the old weights go only once nothing names them
        assert steps.index(commit) < steps.index(("unlinked", bank_weights_path(template).name)), steps

    for kill_at in range(1, len(steps) + 2):
        folder = fresh_copy(f"kill-{kill_at}")
        child = ctx.Process(target=crash_writer.save_and_die, args=(what, folder, version, kill_at), daemon=True)
        child.start()
        child.join(60)
        done = kill_at > len(steps)
        assert child.exitcode == (0 if done else KILLED), (kill_at, steps)
        committed = done or kill_at > steps.index(commit)
        assert read(folder) == (version if committed else old), f"killed after step {kill_at}: {steps[kill_at - 1]}"
        if what == "bank":  # the next save clears what the kill left behind
            save_version("bank", folder, "A")
            assert sorted(p.name for p in folder.iterdir()) == sorted([MANIFEST_FILE, bank_weights_path(folder).name])


def test_a_save_that_replaces_the_bank_while_it_is_loaded_is_read_again(tmp_path, monkeypatch):
    """A reader that read the old manifest, then lost its weights file to a save, reads the new bank."""
    folder = tmp_path / "bank"
    save_version("bank", folder, "A")
    original = bank_module._read_weights
    calls = []

    def racing(bank_dir, manifest):
        calls.append(manifest["provenance"]["version"])
        if len(calls) == 1:
            save_bank(folder, network("B"), crash_writer.styles("B"), {"version": "B"})  # deletes A's weights
        return original(bank_dir, manifest)

    monkeypatch.setattr(bank_module, "_read_weights", racing)
    assert bank_version(folder) == "B" and calls == ["A", "B"]
