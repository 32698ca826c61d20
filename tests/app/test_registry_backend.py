"""The style registry hands requests the onnx export of the live network, rebuilt when the bank changes."""

import torch

from app.styles import StyleRegistry
from model.bank import load_bank, style_rows
from model.onnx_backend import OnnxNetwork
from tests.app.service_helpers import make_tiny_bank


def test_onnx_runner_follows_learned_styles(tmp_path):
    bank = load_bank(make_tiny_bank(tmp_path / "bank"))
    built = []
    registry = StyleRegistry(bank, tmp_path / "styles", lambda net: built.append(1) or OnnxNetwork(net, threads=1))
    (tmp_path / "styles").mkdir()
    first = registry.view()
    assert isinstance(first.network, OnnxNetwork) and registry.view().network is first.network  # cached
    assert len(built) == 1

    rows = {key: value * 1.5 for key, value in style_rows(bank.network, 1).items()}  # a new, different row
    registry.commit_learned("delta", rows, {"note": "test"})
    view = registry.view()
    assert len(built) == 2 and view.names[-1] == "delta" and view.network.config.n_styles == 4
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    weights = torch.eye(4)[3:4]
    with torch.no_grad():
        expected = bank.network(image, weights)
    assert (view.network(image, weights) - expected).abs().max().item() < 1e-4

    registry.remove("delta")
    assert registry.view().network.config.n_styles == 3 and len(built) == 3
