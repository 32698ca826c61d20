"""Joint training on tiny generated data: the loss goes down, resume is exact, the run folder is complete."""

import json

import pytest
import torch
from safetensors.torch import load_file

from model.bank import bank_weights_path, load_bank
from tests.training.conftest import write_paintings, write_photos
from training.config import TrainConfig
from training.train import train

NAMES = ["stripes_a", "stripes_b"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    styles = write_paintings(root / "styles", NAMES)
    write_photos(root / "photos" / "nested", 5)  # content is searched recursively
    return root, tuple(str(p) for p in styles)


def tiny_config(data, out_dir, **overrides) -> TrainConfig:
    root, styles = data
    values = dict(
        styles=styles,
        content_dir=str(root / "photos"),
        out_dir=str(out_dir),
        steps=6,
        batch_size=2,
        image_size=32,
        style_size=64,
        channels=(4, 8, 8),
        n_residual=1,
        outer_kernel=3,
        lr=1e-2,
        device="cpu",
        sample_every=3,
        log_every=1,
        state_every_s=3600.0,
        seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_a_few_steps_reduce_the_loss(data, tmp_path):
    result = train(tiny_config(data, tmp_path / "run", steps=25, sample_every=1000), show_progress=False)
    totals = [entry["total"] for entry in result.history]
    assert len(totals) == 25
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.85 * first, (first, last)


def test_resume_continues_bit_for_bit(data, tmp_path):
    straight = train(tiny_config(data, tmp_path / "straight"), show_progress=False)
    partial = train(tiny_config(data, tmp_path / "resumed"), max_steps_this_run=3, show_progress=False)
    assert partial.step == 3
    resumed = train(tiny_config(data, tmp_path / "resumed"), resume=True, show_progress=False)
    assert straight.step == resumed.step == 6

    expected = load_file(str(bank_weights_path(tmp_path / "straight" / "bank")))
    actual = load_file(str(bank_weights_path(tmp_path / "resumed" / "bank")))
    assert expected.keys() == actual.keys()
    for key in expected:
        assert expected[key].equal(actual[key]), key
    assert [e["total"] for e in straight.history] == [e["total"] for e in resumed.history]


def test_resume_takes_a_new_learning_rate_from_the_config(data, tmp_path):
    from safetensors import safe_open

    train(tiny_config(data, tmp_path / "run", style_lr_scale=10.0), max_steps_this_run=3, show_progress=False)
    train(tiny_config(data, tmp_path / "run", style_lr_scale=10.0, lr=1e-4), resume=True, show_progress=False)
    with safe_open(str(tmp_path / "run" / "state.safetensors"), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-3])  # shared, then the style rows


def test_run_folder_has_samples_loss_plot_bank_and_config(data, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(data, out), show_progress=False)
    assert result.bank_dir == out / "bank"
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_000003.png", "step_000006.png"]
    assert (out / "loss.png").stat().st_size > 0
    assert (out / "state.safetensors").is_file()
    saved = json.loads((out / "train_config.json").read_text())
    assert TrainConfig.from_dict(saved) == tiny_config(data, out)

    manifest = json.loads((out / "bank" / "manifest.json").read_text())
    assert [s["name"] for s in manifest["styles"]] == NAMES
    assert manifest["styles"][0]["source_file"] == "stripes_a.png"
    assert manifest["styles"][0]["training_steps"] == 6
    provenance = manifest["provenance"]
    assert provenance["steps"] == 6 and provenance["train_config"]["image_size"] == 32
    assert provenance["machine"]["cpus"] >= 1 and provenance["command"]
    bank = load_bank(out / "bank")
    assert bank.style_names == NAMES and bank.config.channels == (4, 8, 8)


def test_style_rows_learn_at_their_own_rate(data, tmp_path):
    # Adam's first step moves every parameter with a gradient by about its learning rate.
    def one_step(scale: float, name: str):
        result = train(
            tiny_config(data, tmp_path / name, steps=1, lr=1e-3, style_lr_scale=scale, sample_every=1000),
            show_progress=False,
        )
        return load_bank(result.bank_dir).network

    fast, plain = one_step(20.0, "fast"), one_step(1.0, "plain")
    fast_move = max((n.gamma - 1).abs().max().item() for n in fast.norm_layers())
    plain_move = max((n.gamma - 1).abs().max().item() for n in plain.norm_layers())
    assert 0.01 < fast_move <= 0.02 + 1e-6 and plain_move <= 1e-3 + 1e-6
    shared = [k for k in fast.state_dict() if k.endswith("conv.weight") or k.startswith("out_conv")]
    assert shared and all(torch.equal(fast.state_dict()[k], plain.state_dict()[k]) for k in shared)


def test_a_bank_grows_by_new_paintings_from_an_existing_one(data, tmp_path):
    """--init-bank with more styles: known styles keep their rows, new ones start from the mean row."""
    from tests.training.conftest import write_tiny_bank
    from training.train import init_from_bank

    old_bank = load_bank(write_tiny_bank(tmp_path / "old", ["stripes_b", "gone"]))
    extra = write_paintings(tmp_path / "more", ["stripes_b", "stripes_c"])  # painting_0 / painting_1 colours
    styles = (data[1][0], str(extra[0]), str(extra[1]))
    config = tiny_config(data, tmp_path / "grown", styles=styles, steps=1, lr=1e-12, init_bank=str(old_bank.path))
    config = TrainConfig.from_dict({**config.to_dict(), "style_names": ["stripes_a", "stripes_b", "stripes_c"]})
    network = load_bank(train(config, show_progress=False).bank_dir).network
    for new, old in zip(network.norm_layers(), old_bank.network.norm_layers(), strict=True):
        mean = old.gamma.mean(dim=0)
        assert torch.allclose(new.gamma[1], old.gamma[0], atol=1e-6)  # stripes_b kept its row
        assert torch.allclose(new.gamma[0], mean, atol=1e-6) and torch.allclose(new.gamma[2], mean, atol=1e-6)
        assert not torch.allclose(new.gamma[1], mean, atol=1e-3)
    shared = "encoder.0.conv.weight"
    assert torch.allclose(network.state_dict()[shared], old_bank.network.state_dict()[shared], atol=1e-6)

    # Another architecture is refused, by name.
    from model.transformer import TransformerConfig, TransformerNet

    wider = TransformerNet(TransformerConfig(n_styles=3, channels=(4, 8, 16), n_residual=1, outer_kernel=3))
    with pytest.raises(ValueError, match="another architecture"):
        init_from_bank(wider, old_bank, ["a", "b", "c"])
    # A dilated network has the same weights, spread wider: it can start from an undilated bank.
    dilated = TransformerNet(TransformerConfig.from_dict({**old_bank.network.config.to_dict(), "residual_dilation": 2}))
    init_from_bank(dilated, old_bank, ["stripes_b", "gone"])
    residual = "residuals.0.first.conv.weight"
    assert torch.equal(dilated.state_dict()[residual], old_bank.network.state_dict()[residual])
    assert dilated.residuals[0].first.conv.dilation == (2, 2)
