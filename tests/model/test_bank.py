import json
import os
import pickle
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

import model.bank as bank_module
from model.bank import (
    DEFAULT_BANK_DIR,
    MANIFEST_FILE,
    PAINTINGS_DIR,
    WEIGHTS_FILE,
    StyleInfo,
    _atomic_save_safetensors,
    add_learned_style,
    atomic_write_bytes,
    bank_weights_path,
    load_bank,
    load_learned_style,
    network_fingerprint,
    promote_learned_styles,
    remove_file_durably,
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
    # A pickled state dict renamed to the weights file must never be unpickled.
    weights = bank_weights_path(tiny_bank)
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
    weights = bank_weights_path(tiny_bank)
    state = load_file(str(weights))
    state["out_conv.bias"] = state["out_conv.bias"] + 1
    save_file(state, str(weights))
    with pytest.raises(BankFormatError, match="SHA-256"):
        load_bank(tiny_bank)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.update(format="something-else"), "not a cinstyle-bank manifest"),
        (lambda m: m.update(format_version=99), "format_version 99"),
        (lambda m: m["styles"].pop(), "manifest lists 2 styles"),
        (lambda m: m["config"].update(channels=[4, 8, 16]), "does not fit"),
        (lambda m: m["styles"][0].update(name="../evil"), "bad config or style list"),
    ],
)
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
    name, rows, fingerprint, _, _ = load_learned_style(tmp_path / "l" / "other.safetensors")
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
    assert sorted(p.name for p in tiny_bank.iterdir()) == [MANIFEST_FILE, bank_weights_path(tiny_bank).name]


def test_weights_are_named_by_their_content(tiny_bank):
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    weights = bank_weights_path(tiny_bank)
    assert weights.name == manifest["weights_file"] == f"weights-{manifest['weights_sha256'][:16]}.safetensors"
    assert bank_module.sha256_file(weights) == manifest["weights_sha256"] == load_bank(tiny_bank).weights_sha256


def test_a_new_save_deletes_the_old_weights_and_strays_but_nothing_else(tiny_bank):
    old = bank_weights_path(tiny_bank)
    strays = [
        ".weights-0123456789abcdef.safetensors.x1y2.tmp",
        ".manifest.json.abc.tmp",
        "weights-fedcba9876543210.safetensors",
        WEIGHTS_FILE,
    ]
    keep = ["notes.txt", "weights-backup.safetensors", ".other.tmp"]
    for name in strays + keep:
        (tiny_bank / name).write_bytes(b"left over")
    assert load_bank(tiny_bank).style_names == TINY_STYLES  # the loader ignores them
    save_bank(tiny_bank, make_tiny_network(seed=1), [StyleInfo(n) for n in TINY_STYLES])
    new = bank_weights_path(tiny_bank)
    assert new != old
    assert sorted(p.name for p in tiny_bank.iterdir()) == sorted([MANIFEST_FILE, new.name, *keep])
    assert torch.equal(
        load_bank(tiny_bank).network.state_dict()["out_conv.bias"],
        make_tiny_network(seed=1).state_dict()["out_conv.bias"],
    )


def test_saving_the_same_network_again_keeps_one_weights_file(tiny_bank):
    before = bank_weights_path(tiny_bank)
    save_bank(tiny_bank, make_tiny_network(), [StyleInfo(n) for n in TINY_STYLES])
    assert bank_weights_path(tiny_bank) == before
    assert sorted(p.name for p in tiny_bank.iterdir()) == [MANIFEST_FILE, before.name]


def test_a_legacy_bank_loads_and_a_new_save_replaces_its_weights(tiny_bank):
    bank_weights_path(tiny_bank).rename(tiny_bank / WEIGHTS_FILE)
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    manifest["weights_file"] = WEIGHTS_FILE
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert load_bank(tiny_bank).style_names == TINY_STYLES
    del manifest["weights_file"]  # the oldest manifests do not name it at all
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert bank_weights_path(tiny_bank) == tiny_bank / WEIGHTS_FILE
    assert load_bank(tiny_bank).style_names == TINY_STYLES
    save_bank(tiny_bank, make_tiny_network(seed=1), [StyleInfo(n) for n in TINY_STYLES])
    assert sorted(p.name for p in tiny_bank.iterdir()) == [MANIFEST_FILE, bank_weights_path(tiny_bank).name]


def test_the_bundled_bank_is_its_manifest_and_the_weights_it_names():
    # Since the six promoted styles its manifest names a weights-<hash> file (before: the legacy
    # weights.safetensors). Either way nothing else may ship in the package (no stale weights, no .tmp)
    # beside the paintings' thumbnails, one per style.
    assert bank_weights_path(DEFAULT_BANK_DIR).is_file()
    assert sorted(p.name for p in DEFAULT_BANK_DIR.iterdir()) == sorted(
        [MANIFEST_FILE, bank_weights_path(DEFAULT_BANK_DIR).name, PAINTINGS_DIR]
    )
    styles = json.loads((DEFAULT_BANK_DIR / MANIFEST_FILE).read_text())["styles"]
    assert sorted(p.name for p in (DEFAULT_BANK_DIR / PAINTINGS_DIR).iterdir()) == sorted(
        f"{s['name']}.jpg" for s in styles
    )


@pytest.mark.parametrize("name", ["../weights.safetensors", "..", ".", "", "/etc/passwd", "sub/w.safetensors", 7])
def test_a_weights_file_outside_the_folder_is_refused(tiny_bank, name):
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    manifest["weights_file"] = name
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="inside the bank folder"):
        load_bank(tiny_bank)


def test_a_missing_weights_file_is_a_clear_error(tiny_bank):
    bank_weights_path(tiny_bank).unlink()
    with pytest.raises(BankFormatError, match="not found"):
        load_bank(tiny_bank)


def test_a_save_into_a_new_nested_folder(tmp_path):
    folder = save_bank(tmp_path / "a" / "b" / "bank", make_tiny_network(), [StyleInfo(n) for n in TINY_STYLES])
    assert load_bank(folder).style_names == TINY_STYLES


@pytest.fixture
def umask_077():
    previous = os.umask(0o077)
    yield
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_written_file_is_0644_whatever_the_umask(tmp_path, umask_077):
    atomic_write_bytes(tmp_path / "plain.json", b"{}")
    _atomic_save_safetensors({"x": torch.ones(2)}, tmp_path / "state.safetensors", {"format": "x"})
    folder = save_bank(tmp_path / "bank", make_tiny_network(), [StyleInfo(n) for n in TINY_STYLES])
    bank = load_bank(folder)
    learned = save_learned_style(
        tmp_path / "learned" / "mine.safetensors", "mine", style_rows(bank.network, 0), bank.fingerprint
    )
    files = [
        tmp_path / "plain.json",
        tmp_path / "state.safetensors",
        folder / MANIFEST_FILE,
        bank_weights_path(folder),
        learned,
    ]
    assert {f.name: _mode(f) for f in files} == {f.name: 0o644 for f in files}
    assert load_learned_style(learned)[0] == "mine"


def _record_steps(monkeypatch) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    real_fsync = os.fsync

    def fsync(fd):
        steps.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(bank_module, "_after_step", lambda step, path: steps.append((step, path.name)))
    return steps


def test_atomic_write_fsyncs_the_file_then_the_folder_after_the_rename(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    steps = _record_steps(monkeypatch)
    atomic_write_bytes(tmp_path / "out" / "record.json", b"{}")
    names = [name for step, name in steps if step.startswith("temp")]
    assert len(set(names)) == 1 and names[0].startswith(".record.json.") and names[0].endswith(".tmp")
    assert [(s, n if s in ("replaced", "dir-synced", "fsync") else "tmp") for s, n in steps] == [
        ("temp-created", "tmp"),
        ("temp-written", "tmp"),
        ("fsync", "file"),
        ("temp-synced", "tmp"),
        ("replaced", "record.json"),
        ("fsync", "dir"),
        ("dir-synced", "out"),
    ]
    assert (tmp_path / "out" / "record.json").read_bytes() == b"{}"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["record.json"]


def test_atomic_write_creates_missing_folders_durably(tmp_path, monkeypatch):
    steps = _record_steps(monkeypatch)
    atomic_write_bytes(tmp_path / "x" / "y" / "f.bin", b"1")
    assert [s for s in steps if s[0] == "dir-created"] == [("dir-created", "x"), ("dir-created", "y")]
    assert steps[:4] == [("dir-created", "x"), ("fsync", "dir"), ("dir-synced", tmp_path.name), ("dir-created", "y")]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")

    def boom(step, path):
        if step == "temp-synced":
            raise OSError("disk full")

    monkeypatch.setattr(bank_module, "_after_step", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_remove_file_durably(tmp_path, monkeypatch):
    target = tmp_path / "gone.safetensors"
    target.write_bytes(b"x")
    steps = _record_steps(monkeypatch)
    remove_file_durably(target)
    assert not target.exists()
    assert steps == [("unlinked", "gone.safetensors"), ("fsync", "dir"), ("dir-synced", tmp_path.name)]
    remove_file_durably(target)  # already gone: fine
    remove_file_durably(str(tmp_path / "never-was"))
    assert len(steps) == 3


def test_a_learned_style_must_be_in_a_file_of_its_name(tiny_bank, tmp_path):
    bank = load_bank(tiny_bank)
    path = save_learned_style(
        tmp_path / "l" / "mine.safetensors", "mine", style_rows(bank.network, 0), bank.fingerprint
    )
    renamed = path.rename(tmp_path / "l" / "theirs.safetensors")
    with pytest.raises(BankFormatError, match="'mine'.*'theirs'"):
        load_learned_style(renamed)
    assert load_bank(tiny_bank, learned_dir=tmp_path / "l").style_names == TINY_STYLES  # skipped with a warning


def test_a_bank_with_a_narrow_decoder_round_trips(tmp_path):
    from model.transformer import TransformerConfig, TransformerNet

    torch.manual_seed(1)
    network = TransformerNet(
        TransformerConfig(n_styles=2, channels=(4, 8, 8), n_residual=1, outer_kernel=3, decoder_channels=(6, 2))
    ).eval()
    folder = save_bank(tmp_path / "narrow", network, [StyleInfo("a"), StyleInfo("b")])
    bank = load_bank(folder)
    assert bank.config.decoder_channels == (6, 2)
    image = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(bank.network(image, torch.eye(2)[:1]), network(image, torch.eye(2)[:1]))


def _thumbnail(colour: tuple[int, int, int], size: tuple[int, int] = (600, 300)) -> bytes:
    from PIL import Image

    from model.imageio import thumbnail_jpeg

    return thumbnail_jpeg(Image.new("RGB", size, colour))


def test_thumbnail_fits_256_and_is_a_jpeg():
    import io

    from PIL import Image

    thumb = Image.open(io.BytesIO(_thumbnail((200, 30, 40))))
    assert thumb.format == "JPEG" and thumb.size == (256, 128)
    small = Image.open(io.BytesIO(_thumbnail((1, 2, 3), size=(40, 20))))
    assert small.size == (40, 20)  # never enlarged


def test_bank_paintings_round_trip_and_are_optional(tmp_path):
    network = make_tiny_network()
    paintings = [_thumbnail((255, 0, 0)), None, _thumbnail((0, 0, 255))]
    styles = [StyleInfo(name, painting=p) for name, p in zip(TINY_STYLES, paintings, strict=True)]
    save_bank(tmp_path / "bank", network, styles)
    loaded = load_bank(tmp_path / "bank")
    assert [s.painting for s in loaded.styles] == paintings
    assert sorted(p.name for p in (tmp_path / "bank" / "paintings").iterdir()) == [
        f"{TINY_STYLES[0]}.jpg",
        f"{TINY_STYLES[2]}.jpg",
    ]


def test_learned_style_keeps_its_painting(tiny_bank, tmp_path):
    bank = load_bank(tiny_bank)
    rows = style_rows(bank.network, 1)
    painting = _thumbnail((10, 200, 90))
    learned_dir = tmp_path / "learned"
    save_learned_style(learned_dir / "painted.safetensors", "painted", rows, bank.fingerprint, {}, painting)
    save_learned_style(learned_dir / "bare.safetensors", "bare", rows, bank.fingerprint, {})
    name, loaded_rows, _, _, loaded_painting = load_learned_style(learned_dir / "painted.safetensors")
    assert loaded_painting == painting and set(loaded_rows) == set(rows)  # the thumbnail is not a row
    merged = load_bank(tiny_bank, learned_dir=learned_dir)
    by_name = {s.name: s for s in merged.styles}
    assert by_name["painted"].painting == painting and by_name["bare"].painting is None


def test_bundled_bank_ships_a_thumbnail_of_every_painting():
    import io

    from PIL import Image

    bank = load_bank(DEFAULT_BANK_DIR)
    for style in bank.styles:
        assert style.painting is not None, style.name
        assert max(Image.open(io.BytesIO(style.painting)).size) <= 256, style.name


# -- the network fingerprint: what a learned style is tied to ------------------------------------------------------


def test_network_fingerprint_ignores_style_rows_but_not_shared_weights(tmp_path):
    network = make_tiny_network()
    state = network.state_dict()
    fingerprint = network_fingerprint(state)
    more_rows = {k: torch.cat([v, v[:1] + 1]) if k.endswith((".gamma", ".beta")) else v for k, v in state.items()}
    other_rows = {k: v + 1 if k.endswith((".gamma", ".beta")) else v for k, v in state.items()}
    assert network_fingerprint(more_rows) == network_fingerprint(other_rows) == fingerprint
    conv_key = next(k for k in state if k.endswith("conv.weight"))
    nudged = dict(state)
    nudged[conv_key] = state[conv_key].clone()
    nudged[conv_key].view(-1)[0] += 1e-6  # one weight, one ulp-scale change
    assert network_fingerprint(nudged) != fingerprint
    assert network_fingerprint({**state, conv_key: state[conv_key].double()}) != fingerprint  # dtype counts
    save_bank(tmp_path / "bank", network, [StyleInfo(n) for n in TINY_STYLES])
    assert load_bank(tmp_path / "bank").fingerprint == fingerprint


def test_promoted_styles_become_built_in_and_keep_every_learned_style_loading(tiny_bank, tmp_path):
    bank = load_bank(tiny_bank)
    rows = {k: v * 0.5 + 0.1 for k, v in style_rows(bank.network, 2).items()}
    painting = _thumbnail((200, 30, 30))
    # Learned before the promotion: one by this version (network fingerprint), one by an earlier version (tied to
    # the SHA-256 of the weights file), and one for another network.
    users = tmp_path / "users"
    save_learned_style(users / "mine.safetensors", "mine", style_rows(bank.network, 0), bank.fingerprint)
    save_learned_style(users / "older.safetensors", "older", style_rows(bank.network, 1), bank.weights_sha256)
    save_learned_style(users / "alien.safetensors", "alien", style_rows(bank.network, 1), "f" * 64)
    save_learned_style(tmp_path / "new" / "fresh.safetensors", "fresh", rows, bank.fingerprint, {"k": 1}, painting)

    add_learned_style(bank, *load_learned_style(tmp_path / "new" / "fresh.safetensors"))
    expected = _outputs(bank.network, index=3)
    promote_learned_styles(bank, tmp_path / "grown")

    grown = load_bank(tmp_path / "grown", learned_dir=users)
    assert grown.style_names == [*TINY_STYLES, "fresh", "mine", "older"]  # "alien" skipped
    assert [s.kind for s in grown.styles] == ["builtin"] * 4 + ["learned"] * 2
    fresh = grown.styles[3]
    assert fresh.painting == painting and fresh.metadata["k"] == 1 and fresh.metadata["promoted_from_learned"]
    assert grown.fingerprint == bank.fingerprint and grown.weights_sha256 != bank.weights_sha256
    assert torch.equal(_outputs(grown.network, index=3), expected)  # the promoted row serves the same pixels
    for index in range(3):  # and the old built-ins are untouched
        assert torch.equal(_outputs(grown.network, index), _outputs(load_bank(tiny_bank).network, index))
    manifest = json.loads((tmp_path / "grown" / MANIFEST_FILE).read_text())
    assert manifest["compatible_weights_sha256"] == [load_bank(tiny_bank).weights_sha256]
    assert manifest["provenance"]["promoted_styles"][-1]["styles"] == ["fresh"]
    with pytest.raises(InvalidParameterError, match="built in"):
        remove_style(grown, "fresh")

    # Grown again from the grown bank: it still accepts the first file's learned styles.
    save_learned_style(tmp_path / "new2" / "second.safetensors", "second", rows, grown.fingerprint)
    again = load_bank(tmp_path / "grown")
    add_learned_style(again, *load_learned_style(tmp_path / "new2" / "second.safetensors"))
    promote_learned_styles(again, tmp_path / "grown2")
    assert load_bank(tmp_path / "grown2", learned_dir=users).style_names[-2:] == ["mine", "older"]


def test_a_bad_compatible_list_is_refused(tiny_bank):
    manifest = json.loads((tiny_bank / MANIFEST_FILE).read_text())
    manifest["compatible_weights_sha256"] = "abc"
    (tiny_bank / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(BankFormatError, match="compatible_weights_sha256"):
        load_bank(tiny_bank)


def _outputs(network, index):
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    weights = torch.zeros(1, network.config.n_styles)
    weights[0, index] = 1
    with torch.no_grad():
        return network(image, weights)


def test_the_bundled_bank_still_accepts_styles_learned_on_its_16_style_predecessor(tmp_path):
    # Users' learned styles from before the promotion carry the SHA-256 of the old weights file.
    bank = load_bank(DEFAULT_BANK_DIR)
    assert len(bank.styles) == 22 and {s.kind for s in bank.styles} == {"builtin"}
    old_file_sha = "23084660a51b6a81d405e940082f87c217c253812b11024f0cdd540cda685fbc"
    save_learned_style(tmp_path / "mine.safetensors", "mine", style_rows(bank.network, 0), old_file_sha)
    assert load_bank(DEFAULT_BANK_DIR, learned_dir=tmp_path).style_names[-1] == "mine"
