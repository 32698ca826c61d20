"""The live bank: immutable snapshots, the store written first, the runner rebuilt off the reader's path."""

import pytest
import torch

from app.errors import ConflictError, NotFoundError
from app.live_bank import LiveBank
from app.style_store import LearnedStyle, LocalStyleStore
from model.bank import load_bank, style_rows
from model.onnx_backend import OnnxNetwork
from model.runner import Runner, TorchRunner
from tests.app.service_helpers import make_tiny_bank


def _new_row(bank, source: int = 1, scale: float = 1.5) -> dict[str, torch.Tensor]:
    return {key: value * scale for key, value in style_rows(bank.network, source).items()}  # a new, different row


def _live(tmp_path, make_runner=TorchRunner):
    bank = load_bank(make_tiny_bank(tmp_path / "bank"))
    store = LocalStyleStore(tmp_path / "styles")
    store.prepare()
    return bank, store, LiveBank(bank, store, make_runner)


def test_onnx_runner_follows_learned_styles_and_old_snapshots_stay_whole(tmp_path):
    built = []
    bank, store, live = _live(tmp_path, lambda net: built.append(1) or OnnxNetwork(net, threads=1))
    first = live.current
    assert isinstance(first.runner, OnnxNetwork) and isinstance(first.runner, Runner)
    assert live.view() is first and len(built) == 1  # reading builds nothing

    live.commit_learned(LearnedStyle("delta", _new_row(bank), bank.fingerprint, {"note": "test"}))
    second = live.current
    assert len(built) == 2 and second.names[-1] == "delta" and second.runner.n_styles == 4
    assert second.version > first.version
    # the snapshot a request took before the change is untouched: same names, same runner, same rows
    assert first.names == ("alpha", "beta", "gamma") and first.runner.n_styles == 3
    assert first.bank.network.config.n_styles == 3
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = bank.network(image, torch.eye(3)[1:2])
        learned_expected = live.current.bank.network(image, torch.eye(4)[3:4])
    assert (second.runner(image, torch.eye(4)[3:4]) - learned_expected).abs().max().item() < 1e-4
    assert (first.runner(image, torch.eye(3)[1:2]) - expected).abs().max().item() < 1e-4
    assert (store.path("delta")).is_file()

    live.remove("delta")
    assert live.current.runner.n_styles == 3 and len(built) == 3
    assert not store.path("delta").exists()
    assert second.names[-1] == "delta"  # still whole for whoever holds it


def test_learned_styles_load_from_the_store_and_bad_ones_are_skipped(tmp_path):
    bank, store, live = _live(tmp_path)
    live.commit_learned(LearnedStyle("delta", _new_row(bank), bank.fingerprint, {"job_id": "abc"}))
    foreign = LearnedStyle("foreign", _new_row(bank, 2), "0" * 64)  # fitted to another bank
    store.save(foreign)
    again = LiveBank(load_bank(tmp_path / "bank"), store, TorchRunner)
    assert again.current.names == ("alpha", "beta", "gamma", "delta")
    assert again.info("delta").kind == "learned" and again.info("delta").metadata["job_id"] == "abc"
    assert store.job_of("delta") == "abc" and store.job_of("nothing") is None


def test_remove_deletes_from_the_store_first_and_a_failed_delete_changes_nothing(tmp_path):
    bank, store, live = _live(tmp_path)
    live.commit_learned(LearnedStyle("delta", _new_row(bank), bank.fingerprint))
    before = live.current

    class FailingStore(LocalStyleStore):
        def delete(self, name: str) -> int:
            raise OSError("read-only file system")

    live._store = FailingStore(store.styles_dir)
    with pytest.raises(OSError):
        live.remove("delta")
    assert live.current is before and store.path("delta").is_file()  # served and stored: consistent

    live._store = store
    with pytest.raises(ConflictError):
        live.remove("alpha")  # built in
    with pytest.raises(NotFoundError):
        live.remove("nope")
    live.remove("delta")
    assert "delta" not in live.current.names and not store.path("delta").exists()


def test_names_are_reserved_while_learning(tmp_path):
    bank, _, live = _live(tmp_path)
    live.reserve("delta")
    with pytest.raises(ConflictError):
        live.reserve("delta")
    with pytest.raises(ConflictError):
        live.reserve("alpha")
    live.release("delta")
    live.reserve("delta")


def test_refresh_follows_a_store_another_process_changed(tmp_path):
    bank, store, live = _live(tmp_path)
    other = LiveBank(load_bank(tmp_path / "bank"), store, TorchRunner)
    changed = []
    other.listeners.append(changed.append)
    assert other.refresh() is False
    live.commit_learned(LearnedStyle("delta", _new_row(bank), bank.fingerprint))
    assert other.refresh() is True and other.current.names[-1] == "delta" and changed == [{"delta"}]
    live.remove("delta")
    assert other.refresh() is True and "delta" not in other.current.names and changed[-1] == {"delta"}


def test_a_learned_style_promoted_into_the_checkpoint_is_served_as_the_built_in(tmp_path, caplog):
    from model.bank import add_learned_style, promote_learned_styles

    bank, store, live = _live(tmp_path)
    live.commit_learned(LearnedStyle("delta", _new_row(bank), bank.fingerprint))
    live.commit_learned(LearnedStyle("epsilon", _new_row(bank, 2), bank.weights_sha256))  # an older version's tie
    promoted_row = _new_row(bank, 0, 0.5)
    grown = load_bank(tmp_path / "bank")
    add_learned_style(grown, "delta", promoted_row, grown.fingerprint)
    promote_learned_styles(grown, tmp_path / "grown")

    with caplog.at_level("WARNING", logger="app.live_bank"):
        restarted = LiveBank(load_bank(tmp_path / "grown"), store, TorchRunner)
    assert restarted.current.names == ("alpha", "beta", "gamma", "delta", "epsilon")
    assert restarted.info("delta").kind == "builtin" and restarted.info("epsilon").kind == "learned"
    served = style_rows(restarted.current.bank.network, 3)
    assert all(torch.equal(served[key], promoted_row[key]) for key in promoted_row)  # the checkpoint's row
    assert "delta is not served" in caplog.text
