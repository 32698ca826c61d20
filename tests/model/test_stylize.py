import pytest
import torch

from model.errors import InvalidParameterError
from model.stylize import preserve_colors, rgb_to_yiq, stylize_tensor
from tests.conftest import make_tiny_network


def test_strength_mixes_linearly_with_the_original():
    network = make_tiny_network()
    image, weights = torch.rand(1, 3, 20, 20), torch.eye(3)[:1]
    full = stylize_tensor(network, image, weights, strength=1.0)
    half = stylize_tensor(network, image, weights, strength=0.5)
    assert torch.allclose(stylize_tensor(network, image, weights, strength=0.0), image)
    assert torch.allclose(half, 0.5 * full + 0.5 * image, atol=1e-6)


def test_preserve_color_keeps_chrominance_and_takes_luminance():
    network = make_tiny_network()
    image = torch.rand(1, 3, 24, 24) * 0.6 + 0.2
    stylized = stylize_tensor(network, image, torch.eye(3)[2:3])
    kept = stylize_tensor(network, image, torch.eye(3)[2:3], preserve_color=True)
    assert torch.allclose(rgb_to_yiq(kept)[:, 0], rgb_to_yiq(stylized)[:, 0], atol=0.02)
    assert (rgb_to_yiq(kept)[:, 1:] - rgb_to_yiq(image)[:, 1:]).abs().mean() < 0.02
    assert (rgb_to_yiq(stylized)[:, 1:] - rgb_to_yiq(image)[:, 1:]).abs().mean() > 0.02
    assert torch.equal(preserve_colors(image, image).clamp(0, 1), preserve_colors(image, image))


@pytest.mark.parametrize("strength", [-0.1, 1.01, float("nan")])
def test_bad_strength_is_refused(strength):
    with pytest.raises(InvalidParameterError, match="strength must be between 0 and 1"):
        stylize_tensor(make_tiny_network(), torch.rand(1, 3, 16, 16), torch.eye(3)[:1], strength=strength)
