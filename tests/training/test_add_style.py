"""Learning one new style into a bank: only a new gamma/beta row changes."""

import io
import threading

import pytest
import torch
from PIL import Image

from app.cli import main as cli_main
from model.bank import load_bank, load_learned_style, save_learned_style, style_rows
from model.errors import CancelledError, CinstyleError, InvalidParameterError
from model.losses import target_grams
from model.style_spec import parse_style_spec
from model.stylize import stylize_tensor
from tests.training.conftest import painting, photo, write_paintings, write_photos, write_tiny_bank
from training.add_style import AddStyleConfig, default_content_images, learn_style, learned_style_metadata, mean_rows
from training.config import LossWeights
from training.objective import transfer_loss

NAMES = ["first", "second", "third"]
CONFIG = AddStyleConfig(steps=25, batch_size=2, image_size=32, style_size=64, lr=5e-2)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return load_bank(write_tiny_bank(tmp_path_factory.mktemp("add_style") / "bank", NAMES))


@pytest.fixture(scope="module")
def content():
    return [photo(i) for i in range(3)]


@pytest.fixture(scope="module")
def style():
    return painting(7).float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def learned(bank, vgg, style, content):
    """(state of the bank before, rows learned for 'fourth')."""
    before = {k: v.clone() for k, v in bank.network.state_dict().items()}
    return before, learn_style(bank, style, "fourth", vgg, content, CONFIG)


def loss_with_rows(bank, rows, vgg, style, content):
    """The training loss of a one-style copy of the bank using ``rows``, on fixed photos."""
    from training.add_style import _single_style_network

    network = _single_style_network(bank.network, rows).eval()
    batch = torch.stack([c[:, :32, :32] for c in content]).float().div(255)
    with torch.no_grad():
        output = network(batch, torch.ones(len(batch), 1))
        _, terms = transfer_loss(vgg, output, batch, target_grams(vgg, style), LossWeights())
    return terms["total"]


def test_only_a_new_row_is_learned_and_the_bank_is_untouched(bank, learned):
    before, rows = learned
    after = bank.network.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    assert bank.style_names == NAMES

    expected = style_rows(bank.network, 0)
    assert rows.keys() == expected.keys()
    init = mean_rows(bank.network)
    for key, row in rows.items():
        assert row.dim() == 1 and row.shape == expected[key].shape
        assert torch.isfinite(row).all()
    assert any(not torch.allclose(rows[k], init[k]) for k in rows), "the rows did not move from the mean"


def test_the_loss_on_the_new_style_decreases(bank, learned, vgg, style, content):
    _, rows = learned
    after = loss_with_rows(bank, rows, vgg, style, content)
    before = loss_with_rows(bank, mean_rows(bank.network), vgg, style, content)
    assert after < 0.9 * before, (before, after)


def test_learning_is_deterministic_for_a_seed(bank, vgg, style, content):
    config = AddStyleConfig(steps=3, batch_size=2, image_size=32, style_size=64)
    first = learn_style(bank, style, "fourth", vgg, content, config)
    second = learn_style(bank, style, "fourth", vgg, content, config)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_learned_file_round_trips_and_stylizes_with_the_new_name(bank, learned, tmp_path):
    _, rows = learned
    learned_dir = tmp_path / "learned"
    metadata = learned_style_metadata("ab" * 32, CONFIG, source_file="fourth.png")
    save_learned_style(learned_dir / "fourth.safetensors", "fourth", rows, bank.fingerprint, metadata=metadata)

    name, loaded_rows, fingerprint, loaded_meta, _ = load_learned_style(learned_dir / "fourth.safetensors")
    assert (name, fingerprint) == ("fourth", bank.fingerprint)
    assert all(torch.equal(loaded_rows[k], rows[k]) for k in rows)
    assert loaded_meta["training_steps"] == CONFIG.steps and loaded_meta["source_sha256"] == "ab" * 32

    merged = load_bank(bank.path, learned_dir=learned_dir)
    assert merged.style_names == [*NAMES, "fourth"]
    assert merged.styles[-1].kind == "learned"
    index = merged.index("fourth")
    assert all(torch.equal(style_rows(merged.network, index)[k], rows[k]) for k in rows)
    for i in range(len(NAMES)):  # the built-in rows are unchanged by the merge
        original = style_rows(bank.network, i)
        assert all(torch.equal(style_rows(merged.network, i)[k], original[k]) for k in original)

    image = photo(11).float().div(255).unsqueeze(0)

    def run(spec: str) -> torch.Tensor:
        mix = parse_style_spec(spec, merged.style_names)
        return stylize_tensor(merged.network, image, mix.vector(merged.style_names))

    new, old = run("fourth"), run("first")
    assert new.shape == image.shape and torch.isfinite(new).all()
    assert not torch.allclose(new, old)
    assert torch.isfinite(run("first:0.5,fourth:0.5")).all()


def test_progress_and_cancel(bank, vgg, style, content):
    calls: list[float] = []
    learn_style(
        bank, style, "fourth", vgg, content, AddStyleConfig(steps=3, batch_size=1, image_size=32), progress=calls.append
    )
    assert calls == sorted(calls) and calls[-1] == 1.0 and len(calls) == 3 + 1

    cancel = threading.Event()

    def stop_after_two(fraction: float) -> None:
        if fraction >= 2 / 50:
            cancel.set()

    with pytest.raises(CancelledError):
        learn_style(
            bank,
            style,
            "fourth",
            vgg,
            content,
            AddStyleConfig(steps=50, batch_size=1, image_size=32),
            progress=stop_after_two,
            cancel=cancel,
        )


@pytest.mark.parametrize("name", ["first", "Bad Name", ""])
def test_taken_or_invalid_names_are_refused(bank, vgg, style, content, name):
    with pytest.raises(InvalidParameterError):
        learn_style(bank, style, name, vgg, content, CONFIG)


@pytest.mark.parametrize("kwargs", [{"steps": 0}, {"batch_size": -1}, {"image_size": 16}, {"lr": 0.0}])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match=str(next(iter(kwargs.values())))):
        AddStyleConfig(**kwargs)


def test_default_content_images_are_uint8_rgb_photos():
    images = default_content_images()
    assert len(images) >= 4
    for image in images:
        assert image.dtype == torch.uint8 and image.dim() == 3 and image.shape[0] == 3
        assert 256 <= max(image.shape[1:]) <= 512


def test_add_style_command_writes_a_learned_file_that_merges(tmp_path, capsys):
    bank_dir = write_tiny_bank(tmp_path / "bank", NAMES)
    [style_file] = write_paintings(tmp_path / "paintings", ["my_painting"])
    write_photos(tmp_path / "photos", 2)
    out_dir = tmp_path / "learned"
    code = cli_main(
        [
            "add-style",
            "--bank",
            str(bank_dir),
            "--style",
            str(style_file),
            "--name",
            "my_painting",
            "--content",
            str(tmp_path / "photos"),
            "--out",
            str(out_dir),
            "--steps",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    written = out_dir / "my_painting.safetensors"
    assert capsys.readouterr().out.strip().endswith(str(written))
    merged = load_bank(bank_dir, learned_dir=out_dir)
    assert merged.style_names[-1] == "my_painting"
    meta = merged.styles[-1].metadata
    assert meta["training_steps"] == 1 and len(meta["source_sha256"]) == 64
    assert meta["loss_weights"] == {"content": 1.0, "style": 3.0, "tv": 0.1}  # the bank's own weights
    thumbnail = Image.open(io.BytesIO(merged.styles[-1].painting))
    assert thumbnail.format == "JPEG" and max(thumbnail.size) <= 256  # the painting rides along, small

    code = cli_main(["add-style", "--bank", str(bank_dir), "--style", str(style_file), "--name", "first"])
    assert code == 2
    assert "already in the bank" in capsys.readouterr().err

    # Promoted into the bank folder itself: a built-in style from now on, with its thumbnail in paintings/.
    promote = ["promote-styles", "--bank", str(bank_dir), "--learned", str(written), "--out", str(bank_dir)]
    assert cli_main([*promote, "--note", "one step on two photos"]) == 0
    assert "4 built-in styles" in capsys.readouterr().out
    promoted = load_bank(bank_dir)
    assert promoted.style_names == merged.style_names and {s.kind for s in promoted.styles} == {"builtin"}
    assert (bank_dir / "paintings" / "my_painting.jpg").read_bytes() == merged.styles[-1].painting
    assert promoted.fingerprint == merged.fingerprint
    assert promoted.provenance["promoted_styles"] == [
        {"styles": ["my_painting"], "grew_from": merged.weights_sha256, "note": "one step on two photos"}
    ]
    assert cli_main(promote) == 2 and "already in the bank" in capsys.readouterr().err


def test_add_style_output_file_must_carry_the_style_name(tmp_path):
    from training.add_style import _output_path

    assert _output_path(tmp_path / "mine.safetensors", "mine") == tmp_path / "mine.safetensors"
    assert _output_path(tmp_path, "mine") == tmp_path / "mine.safetensors"
    with pytest.raises(CinstyleError, match="must be named mine.safetensors"):
        _output_path(tmp_path / "theirs.safetensors", "mine")


def test_learning_starts_from_the_bank_style_nearest_to_the_painting(bank, vgg, content):
    """A 'painting' that is the bank's second style applied to a photo: that style is the nearest, and
    learning starts from its row (with a negligible step, the result is that row)."""
    from training.add_style import bank_rows, nearest_style_index

    photo_batch = torch.stack([c[:, :32, :32] for c in content]).float().div(255)
    with torch.no_grad():
        second = bank.network(photo_batch[:1], torch.tensor([[0.0, 1.0, 0.0]]))
    grams = target_grams(vgg, second)
    index, scores = nearest_style_index(bank.network, vgg, photo_batch[:1], grams, CONFIG)
    assert index == 1 and len(scores) == 3 and scores[1] < min(scores[0], scores[2])

    config = AddStyleConfig(steps=1, batch_size=2, image_size=32, style_size=64, lr=1e-9)
    rows = learn_style(bank, second, "from_second", vgg, content, config)
    start = bank_rows(bank.network, 1)
    assert all(torch.allclose(rows[k], start[k], atol=1e-6) for k in rows)
    mean = learn_style(bank, second, "from_mean", vgg, content, AddStyleConfig(**{**config.to_dict(), "init": "mean"}))
    assert any(not torch.allclose(mean[k], start[k], atol=1e-3) for k in mean)


def test_config_rejects_an_unknown_start():
    with pytest.raises(ValueError, match="init must be one of nearest, mean"):
        AddStyleConfig(init="random")
