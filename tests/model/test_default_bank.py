"""The bundled default bank: loadable, described, and its styles are not one colour cast."""

import json

import pytest
import torch

from model.bank import DEFAULT_BANK_DIR, load_bank, validate_style_name
from model.onnx_backend import OnnxNetwork
from model.stylize import stylize_tensor


@pytest.fixture(scope="module")
def bank():
    return load_bank(DEFAULT_BANK_DIR)


def _photo(size: int = 64) -> torch.Tensor:
    """Soft gradients with a bright disc and a dark bar: edges and flat areas to paint over."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = (((x - 0.35) ** 2 + (y - 0.4) ** 2) < 0.04).float()
    bar = ((x > 0.6) & (x < 0.75)).float()
    rgb = torch.stack([0.2 + 0.6 * x, 0.3 + 0.4 * y, 0.7 - 0.4 * x]) + 0.3 * disc - 0.3 * bar
    return rgb.clamp(0, 1).unsqueeze(0)


def test_all_22_paintings_readable_and_a_described_training(bank):
    assert len(bank.style_names) == 22
    for name in bank.style_names:
        assert validate_style_name(name) == name and "_" in name  # painter_title
    manifest = json.loads((DEFAULT_BANK_DIR / "manifest.json").read_text())
    provenance = manifest["provenance"]
    assert provenance["steps"] >= 1000
    assert provenance["train_config"]["styles"] and provenance["machine"]["cpus"] >= 1
    # Trained jointly, or learned as a row on that network and promoted, with the record of how.
    promoted = {name for entry in provenance["promoted_styles"] for name in entry["styles"]}
    assert len(promoted) == 6 and all("add-style" in entry["note"] for entry in provenance["promoted_styles"])
    for style in manifest["styles"]:
        if style["name"] in promoted:
            assert style["promoted_from_learned"] and style["training_steps"] >= 100, style["name"]
            assert style["learned_with"] == "cinstyle add-style" and len(style["source_sha256"]) == 64
        else:
            assert style["training_steps"] == provenance["steps"], style["name"]


def test_styles_give_clearly_different_pictures(bank):
    photo = _photo()
    outputs = [
        stylize_tensor(bank.network, photo, torch.eye(len(bank.style_names))[i : i + 1])
        for i in range(len(bank.style_names))
    ]
    for out in outputs:
        assert (out - photo).abs().mean() > 0.05  # every style changes the photo
    # Remove each output's mean colour: what is left (texture, strokes) must differ between styles too.
    textures = [out - out.mean(dim=(2, 3), keepdim=True) for out in outputs]
    closest = min(
        (textures[i] - textures[j]).abs().mean().item()
        for i in range(len(textures))
        for j in range(i + 1, len(textures))
    )
    assert closest > 0.01


def test_onnx_backend_reproduces_the_default_model(bank):
    photo = _photo(52)
    weights = torch.zeros(1, len(bank.style_names))
    weights[0, 0], weights[0, -1] = 0.5, 0.5
    with torch.no_grad():
        expected = bank.network(photo, weights)
    assert (OnnxNetwork(bank.network, threads=1)(photo, weights) - expected).abs().max() < 1e-4
