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


def _stroke_energy(image) -> float:
    """Mean |difference| between neighbouring pixels: fine strokes have more of it than large ones."""
    import numpy as np

    gray = np.asarray(image.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())


def test_style_scale_sets_the_stroke_size_not_the_output_size():
    import pytest
    import torch

    from model.bank import DEFAULT_BANK_DIR, load_bank
    from model.stylize import stylize_image

    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    bank = load_bank(DEFAULT_BANK_DIR)
    photo = Image.fromarray(skimage_data.astronaut()).resize((200, 160), Image.Resampling.LANCZOS)
    weights = torch.zeros(1, len(bank.style_names))
    weights[0, 0] = 1
    results = {s: stylize_image(bank.network, photo, weights, style_scale=s) for s in (0.5, 1.0, 2.0)}
    assert all(result.size == photo.size for result in results.values())
    energy = {s: _stroke_energy(result) for s, result in results.items()}
    assert energy[2.0] < energy[1.0] < energy[0.5]
    assert energy[2.0] < 0.8 * energy[0.5]


def test_style_scale_out_of_range_is_refused():
    import pytest
    import torch
    from PIL import Image

    from model.errors import InvalidParameterError
    from model.stylize import stylize_image
    from model.transformer import TransformerConfig, TransformerNet

    network = TransformerNet(TransformerConfig(n_styles=1, channels=(4, 8, 8), n_residual=1))
    for bad in (0.1, 5.0, float("nan")):
        with pytest.raises(InvalidParameterError, match="style_scale"):
            stylize_image(network, Image.new("RGB", (32, 32)), torch.ones(1, 1), style_scale=bad)
