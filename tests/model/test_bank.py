import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.bank import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    StyleInfo,
    add_learned_style,
    load_bank,
    load_learned_style,
    remove_style,
    save_bank,
    save_learned_style,
    style_rows,
    validate_style_name,
)
from model.errors import BankFormatError, InvalidParameterError
from tests.conftest import TINY_STYLES, make_tiny_network


def test_round_trip_is_bit_exact(tiny_bank):
    original = make_tiny_network()
    bank = load_bank(tiny_bank)
    assert bank.style_names == TINY_STYLES
    assert bank.config == original.config
    for key, tensor in original.state_dict().items():
        assert torch.equal(bank.network.state_dict()[key], tensor), key
    image = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        assert torch.equal(bank.network(image, torch.eye(3)[1:2]), original(image, torch.eye(3)[1:2]))
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == 1 and manifest["styles"][0]["training_steps"] == 0


def test_manifest_path_also_loads(tiny_bank):
    assert load_bank(tiny_bank / MANIFEST_FILE).style_names == TINY_STYLES


def test_a_pickle_in_place_of_the_weights_is_refused(tiny_bank, tmp_path):
    # A pickled state dict renamed to weights.safetensors must never be unpickled.
    weights = tiny_bank / WEIGHTS_FILE
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights.write_bytes(pickle.dumps({"x": Payload()}))
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    manifest.pop("weights_sha256")
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="not a readable safetensors"):
        load_bank(tiny_bank)
    assert not marker.exists()


def test_replaced_weights_fail_the_checksum(tiny_bank):
    state = load_file(str(tiny_bank / WEIGHTS_FILE))
    state["out_conv.bias"] = state["out_conv.bias"] + 1
    save_file(state, str(tiny_bank / WEIGHTS_FILE))
    with pytest.raises(BankFormatError, match="SHA-256"):
        load_bank(tiny_bank)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.update(format="something-else"), "not a cinstyle-bank manifest"),
    (lambda m: m.update(format_version=99), "format_version 99"),
    (lambda m: m["styles"].pop(), "manifest lists 2 styles"),
    (lambda m: m["config"].update(channels=[4, 8, 16]), "does not fit"),
    (lambda m: m["styles"][0].update(name="../evil"), "bad config or style list"),
])
def test_bad_manifests_are_refused_with_a_clear_error(tiny_bank, mutate, message):
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    mutate(manifest)
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match=message):
        load_bank(tiny_bank)


def test_not_a_bank_folder(tmp_path):
    with pytest.raises(BankFormatError, match="not a bank folder"):
        load_bank(tmp_path / "missing")
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(BankFormatError, match="not valid JSON"):
        load_bank(tmp_path)


def test_save_refuses_mismatched_or_duplicate_names(tmp_path):
    network = make_tiny_network()
    with pytest.raises(ValueError, match="2 style names"):
        save_bank(tmp_path, network, [StyleInfo("a"), StyleInfo("b")])
    with pytest.raises(ValueError, match="duplicate"):
        save_bank(tmp_path, network, [StyleInfo("a"), StyleInfo("a"), StyleInfo("b")])


def test_learned_style_merges_as_a_new_row_and_can_be_removed(tiny_bank, tmp_path):
    bank = load_bank(tiny_bank)
    rows = {k: v + 0.25 for k, v in style_rows(bank.network, 0).items()}
    learned_dir = tmp_path / "learned"
    save_learned_style(learned_dir / "new_one.safetensors", "new_one", rows, bank.fingerprint, {"training_steps": 7})
    merged = load_bank(tiny_bank, learned_dir=learned_dir)
    assert merged.style_names == [*TINY_STYLES, "new_one"]
    assert merged.styles[-1].kind == "learned" and merged.styles[-1].metadata["training_steps"] == 7
    for key, row in style_rows(merged.network, 3).items():
        assert torch.equal(row, rows[key])
    for index in range(3):  # built-in rows untouched
        for key, row in style_rows(merged.network, index).items():
            assert torch.equal(row, style_rows(bank.network, index)[key])
    remove_style(merged, "new_one")
    assert merged.style_names == TINY_STYLES
    with pytest.raises(InvalidParameterError, match="built in"):
        remove_style(merged, TINY_STYLES[0])


def test_learned_style_for_another_bank_is_skipped(tiny_bank, tmp_path):
    bank = load_bank(tiny_bank)
    save_learned_style(tmp_path / "l" / "other.safetensors", "other", style_rows(bank.network, 0), "0" * 64)
    assert load_bank(tiny_bank, learned_dir=tmp_path / "l").style_names == TINY_STYLES
    name, rows, fingerprint, _ = load_learned_style(tmp_path / "l" / "other.safetensors")
    with pytest.raises(BankFormatError, match="different bank"):
        add_learned_style(bank, name, rows, fingerprint)


def test_garbage_learned_file_is_refused(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(BankFormatError):
        load_learned_style(path)


@pytest.mark.parametrize("name", ["", "../x", "a/b", "UPPER", "with space", "x" * 65, ".hidden", "-dash"])
def test_bad_style_names(name):
    with pytest.raises(InvalidParameterError, match="invalid style name"):
        validate_style_name(name)


def test_atomic_save_leaves_no_temp_files(tiny_bank):
    assert sorted(p.name for p in tiny_bank.iterdir()) == [MANIFEST_FILE, WEIGHTS_FILE]


def test_a_bank_with_a_narrow_decoder_round_trips(tmp_path):
    from model.transformer import TransformerConfig, TransformerNet

    torch.manual_seed(1)
    network = TransformerNet(TransformerConfig(n_styles=2, channels=(4, 8, 8), n_residual=1, outer_kernel=3,
                                               decoder_channels=(6, 2))).eval()
    folder = save_bank(tmp_path / "narrow", network, [StyleInfo("a"), StyleInfo("b")])
    bank = load_bank(folder)
    assert bank.config.decoder_channels == (6, 2)
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(bank.network(image, torch.eye(2)[:1]), network(image, torch.eye(2)[:1]))
