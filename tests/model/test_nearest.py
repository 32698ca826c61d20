"""The bank blend nearest to an unseen painting (the slow path's optional head start)."""

import torch

from model.losses import STYLE_LAYERS, gram_matrix, style_loss, target_grams
from model.nearest import nearest_blend
from model.slow import SlowConfig, slow_stylize
from model.stylize import stylize_tensor
from tests.conftest import make_tiny_network


def _photo(size: int = 48) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([x, y, (x + y) / 2]).unsqueeze(0)


def _relative_style_loss(vgg, image, style) -> float:
    targets = target_grams(vgg, style)
    features = vgg(image, STYLE_LAYERS)
    return style_loss({l: gram_matrix(features[l]) for l in STYLE_LAYERS}, targets, relative=True).item()


def test_a_painting_made_by_one_style_finds_that_style(vgg):
    network = make_tiny_network(n_styles=3, seed=2)
    photo = _photo()
    for index in range(3):
        painting = stylize_tensor(network, photo, torch.eye(3)[index : index + 1])
        found = nearest_blend(network, photo, painting, vgg)
        assert found.weights.argmax().item() == index and found.weights.max().item() >= 0.75
        assert found.image.shape == photo.shape
        assert ["a", "b", "c"][index] + ":" in found.spec(["a", "b", "c"])


def test_starting_from_the_nearest_blend_starts_closer_and_ends_no_worse(vgg):
    network = make_tiny_network(n_styles=3, seed=2)
    photo = _photo()
    painting = stylize_tensor(
        network, torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(5)), torch.eye(3)[1:2]
    )
    found = nearest_blend(network, photo, painting, vgg)
    assert _relative_style_loss(vgg, found.image, painting) < _relative_style_loss(vgg, photo, painting)
    config = SlowConfig(steps=4, scales=(1.0,))
    from_photo = slow_stylize(photo, painting, vgg, config)
    from_blend = slow_stylize(photo, painting, vgg, config, init=found.image)
    assert _relative_style_loss(vgg, from_blend, painting) <= _relative_style_loss(vgg, from_photo, painting) * 1.05
