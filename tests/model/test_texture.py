"""Texture synthesis (the Gram method from noise) on tiny generated paintings with the real VGG-19."""

import math
import threading

import pytest
import torch
from torch.nn import functional as F

from model.errors import CancelledError, InvalidParameterError
from model.losses import gram_matrix, style_loss, target_grams
from model.slow import (
    TEXTURE_LAYERS,
    _Objective,
    _plan,
    synthesize_texture,
    texture_config,
    texture_layers,
    texture_noise,
)


def blobs(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A painting-like texture: soft coloured blobs on a warm ground, with some grain."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    image = torch.stack([0.9 * torch.ones_like(x), 0.75 * torch.ones_like(x), 0.4 * torch.ones_like(x)])
    for _ in range(10):
        cy, cx, r = (torch.rand(3, generator=generator) * torch.tensor([size, size, size / 6])).tolist()
        colour = torch.rand(3, 1, 1, generator=generator)
        mask = (((y - cy) ** 2 + (x - cx) ** 2) < (r + 3) ** 2).float()
        image = image * (1 - mask) + colour * mask
    return (image + 0.05 * torch.randn(3, size, size, generator=generator)).clamp(0, 1).unsqueeze(0)


def gram_loss(vgg, image: torch.Tensor, style: torch.Tensor, layers: tuple[str, ...]) -> float:
    targets = target_grams(vgg, style, layers)
    with torch.no_grad():
        features = vgg(image, layers)
    return style_loss({l: gram_matrix(features[l]) for l in layers}, targets, relative=True).item()


def tile_seam(image: torch.Tensor) -> float:
    """Tile ``image`` 2 x 2; the mean |difference| across the tile borders over that of the image's own
    neighbouring pixels in the same phase of the 2-px pooling grid (1: no seam)."""
    _, _, h, w = image.shape
    tiled = torch.cat([torch.cat([image, image], dim=3)] * 2, dim=2)
    border = torch.cat(
        [(tiled[..., :, w] - tiled[..., :, w - 1]).flatten(), (tiled[..., h, :] - tiled[..., h - 1, :]).flatten()]
    )
    columns = [(image[..., :, c + 1] - image[..., :, c]).flatten() for c in range(w - 2, -1, -2)]
    rows = [(image[..., r + 1, :] - image[..., r, :]).flatten() for r in range(h - 2, -1, -2)]
    return (border.abs().mean() / torch.cat(columns + rows).abs().mean()).item()


def test_the_texture_fits_the_paintings_grams_far_better_than_the_noise(vgg):
    style = blobs()
    layers = texture_layers("relu4_1")
    texture = synthesize_texture(style, (48, 64), vgg, texture_config("relu4_1", steps=60), seed=3)
    assert texture.shape == (1, 3, 48, 64) and texture.dtype == style.dtype
    assert 0 <= texture.min() and texture.max() <= 1
    noise = texture_noise(style, (48, 64), 3)
    before, after = gram_loss(vgg, noise, style, layers), gram_loss(vgg, texture, style, layers)
    assert after < 0.1 * before, (before, after)


def test_the_default_deep_texture_fits_coarse_to_fine(vgg):
    """relu5_1 (the default) over two scales: before, an even split left it at 0.71 of the noise's loss."""
    style, size = blobs(), (64, 64)
    config = texture_config("relu5_1", steps=60, min_side=16)
    texture = synthesize_texture(style, size, vgg, config, seed=1)
    noise = texture_noise(style, size, 1)
    layers = texture_layers("relu5_1")
    before, after = gram_loss(vgg, noise, style, layers), gram_loss(vgg, texture, style, layers)
    assert after < 0.1 * before, (before, after)


def test_deep_textures_spend_most_steps_coarse_and_shallow_ones_run_at_full_size():
    assert _plan(texture_config("relu5_1"), (256, 256)) == [(0.25, 100), (0.5, 60), (1.0, 40)]
    assert _plan(texture_config("relu4_1"), (256, 256)) == [(0.25, 100), (0.5, 60), (1.0, 40)]
    for shallow in ("relu1_1", "relu2_1", "relu3_1"):
        assert _plan(texture_config(shallow), (256, 256)) == [(1.0, 200)]
    # a scale under min_side is dropped and its steps go to the others; every scale keeps a step
    assert _plan(texture_config("relu5_1", steps=10), (64, 64)) == [(0.5, 6), (1.0, 4)]
    assert _plan(texture_config("relu5_1", steps=2), (256, 256)) == [(0.5, 1), (1.0, 1)]
    assert _plan(texture_config("relu5_1", scales=(0.5, 1.0)), (256, 256)) == [(0.5, 100), (1.0, 100)]


def test_the_time_limit_falls_in_the_finest_scale(vgg):
    """With far more steps than time, the coarse scale stops at its share of the limit and the full size runs."""
    sizes: list[tuple[int, ...]] = []
    config = texture_config("relu2_1", steps=100_000, time_limit_s=2.0, scales=(0.5, 1.0), min_side=16)
    synthesize_texture(blobs(32), (32, 32), vgg, config, on_step=lambda p: sizes.append(tuple(p.shape[-2:])))
    assert (16, 16) in sizes and sizes[-1] == (32, 32), sorted(set(sizes))


@pytest.mark.parametrize("scale_steps", [(1.0,), (1.0, 0.0), (1.0, -1.0), (1.0, math.inf), (1.0, True)], ids=str)
def test_bad_scale_steps_are_refused(scale_steps):
    with pytest.raises(InvalidParameterError, match="scale_steps"):
        texture_config("relu5_1", scales=(0.5, 1.0), scale_steps=scale_steps)


def mottled(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth colour noise with ~8 px structures: many of them meet every border, so one border is a fair sample."""
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_tileable_textures_have_no_seam_and_plain_ones_do(vgg):
    """Averaged over three seeds: at 64 px one border is still a small sample of pixel pairs. Coarse to fine (as
    relu3_1 ran before it went to a single scale): the plain texture's zero-padded border stands out clearly."""
    style, config = mottled(), texture_config("relu3_1", steps=40, scales=(0.5, 1.0))
    seams = {
        tileable: [
            tile_seam(synthesize_texture(style, (64, 64), vgg, config, tileable=tileable, seed=seed))
            for seed in (0, 1, 2)
        ]
        for tileable in (True, False)
    }
    seam_tileable, seam_plain = sum(seams[True]) / 3, sum(seams[False]) / 3
    assert seam_tileable < 1.5, seams
    assert seam_plain > 3 * seam_tileable, seams


def test_the_circular_loss_sees_a_torus(vgg):
    """Rolled by whole pooling cells (16 px), an image has the same circular loss; the zero-padded loss changes."""
    image, style = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0)), blobs(32)
    rolled = image.roll((16, 32), dims=(2, 3))
    config = texture_config("relu5_1")
    # Two objectives with one seed roll the image by the same random offsets, evaluation after evaluation.
    circular, same_rolls = (_Objective(vgg, None, style, config, circular=True, seed=4) for _ in range(2))
    assert same_rolls(rolled).item() == pytest.approx(circular(image).item(), rel=1e-4)
    padded = _Objective(vgg, None, style, texture_config("relu5_1"), circular=False)
    assert abs(padded(rolled).item() - padded(image).item()) > 1e-3 * padded(image).item()


def test_layers_are_a_prefix_up_to_the_deepest_and_unknown_ones_refused():
    assert texture_layers("relu1_1") == ("relu1_1",)
    assert texture_layers("relu5_1") == TEXTURE_LAYERS == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    assert texture_config("relu3_1").style_layers == ("relu1_1", "relu2_1", "relu3_1")
    for bad in ("relu4_2", "conv1_1", "relu6_1", ""):
        with pytest.raises(InvalidParameterError, match="relu1_1, relu2_1"):
            texture_layers(bad)


def test_the_seed_decides_the_texture(vgg):
    style, config = blobs(32), texture_config("relu2_1", steps=3, scales=(1.0,))
    first = synthesize_texture(style, (32, 32), vgg, config, seed=7)
    assert torch.equal(first, synthesize_texture(style, (32, 32), vgg, config, seed=7))
    assert not torch.equal(first, synthesize_texture(style, (32, 32), vgg, config, seed=8))


def test_progress_ends_at_one_and_cancel_stops_it(vgg):
    calls: list[float] = []
    synthesize_texture(blobs(32), (32, 32), vgg, texture_config("relu2_1", steps=4), progress=calls.append)
    assert calls == sorted(calls) and calls[0] == 0.0 and calls[-1] == 1.0 and len(calls) >= 5

    cancel = threading.Event()
    with pytest.raises(CancelledError):
        synthesize_texture(
            blobs(32),
            (32, 32),
            vgg,
            texture_config("relu2_1", steps=50),
            progress=lambda _: cancel.set(),
            cancel=cancel,
        )


@pytest.mark.parametrize("size", [(8, 32), (32,), (32.0, 32), "32x32"])
def test_bad_sizes_are_refused(vgg, size):
    with pytest.raises(InvalidParameterError, match="size"):
        synthesize_texture(blobs(32), size, vgg, texture_config(steps=1))
