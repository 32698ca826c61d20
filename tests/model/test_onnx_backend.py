"""The onnxruntime backend computes what the torch network computes."""

from pathlib import Path

import pytest
import torch

from model.onnx_backend import OnnxNetwork
from model.stylize import stylize_tensor
from tests.conftest import make_tiny_network


@pytest.fixture(scope="module")
def pair():
    network = make_tiny_network(n_styles=3, seed=4)
    return network, OnnxNetwork(network, threads=1)


@pytest.mark.parametrize("height, width", [(32, 32), (30, 22), (17, 45)])
def test_matches_the_torch_network_at_any_size(pair, height, width):
    network, onnx = pair
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
    for weights in (torch.eye(3)[1:2], torch.tensor([[0.25, 0.0, 0.75]])):
        with torch.no_grad():
            expected = network(image, weights)
        actual = onnx(image, weights)
        assert actual.shape == expected.shape == (1, 3, height, width)
        assert (actual - expected).abs().max().item() < 1e-4


def test_styles_give_different_outputs_and_the_fast_path_accepts_it(pair):
    network, onnx = pair
    image = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    first = stylize_tensor(onnx, image, torch.eye(3)[:1])
    second = stylize_tensor(onnx, image, torch.eye(3)[1:2])
    assert (first - second).abs().mean().item() > 0.01
    kept = stylize_tensor(onnx, image, torch.eye(3)[:1], preserve_color=True, strength=0.5)
    assert torch.allclose(
        kept, stylize_tensor(network, image, torch.eye(3)[:1], preserve_color=True, strength=0.5), atol=1e-4
    )


def test_wrong_weight_shape_is_refused(pair):
    _, onnx = pair
    with pytest.raises(ValueError, match="style_weights must have shape"):
        onnx(torch.rand(1, 3, 16, 16), torch.ones(1, 2))


def _anonymous_resident_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("RssAnon:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_small_runs_keep_their_working_memory_and_large_runs_hand_it_back():
    network = make_tiny_network(n_styles=3, seed=1)
    image, weights = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(1)), torch.eye(3)[:1]
    with torch.no_grad():
        expected = network(image, weights)
    kept = {}
    for keep_memory_pixels in (1024 * 1024, 1024 * 1024 - 1):  # the image is exactly at, then just over the limit
        onnx = OnnxNetwork(network, threads=1, keep_memory_pixels=keep_memory_pixels)
        onnx(torch.rand(1, 3, 16, 16), weights)  # sessions and arena set up
        before = _anonymous_resident_mb()
        result = onnx(image, weights)
        kept[keep_memory_pixels] = _anonymous_resident_mb() - before - result.numel() * 4 / 2**20
        assert (result - expected).abs().max().item() < 1e-4  # the same result either way
        del onnx, result
    # ~100 MB of intermediate buffers at 1024 x 1024 for this network: kept at the limit, returned above it
    assert kept[1024 * 1024] > 50, kept
    assert kept[1024 * 1024 - 1] < 25, kept
