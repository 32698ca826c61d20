"""The slow path (pixel optimisation) on tiny generated images with the real VGG-19."""

import math
import threading
import time

import pytest
import torch

from model.errors import CancelledError, InvalidParameterError
from model.losses import STYLE_LAYERS, gram_matrix, style_loss, target_grams
from model.slow import SlowConfig, slow_stylize


def make_content(height: int = 48, width: int = 64) -> torch.Tensor:
    """A smooth gradient with a dark disc: something with structure to keep."""
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    disc = (((x - 0.5) ** 2 + (y - 0.5) ** 2) < 0.08).float()
    rgb = torch.stack([0.3 + 0.5 * x, 0.3 + 0.5 * y, 0.6 - 0.3 * x]) * (1 - 0.7 * disc)
    return rgb.unsqueeze(0).clamp(0, 1)


def make_style(size: int = 64, seed: int = 0) -> torch.Tensor:
    """Colourful diagonal stripes with noise: a texture very unlike the content."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    stripes = ((x + y) // 4 % 2).float()
    rgb = torch.stack([stripes, 1 - stripes, 0.5 * stripes + 0.25])
    return (rgb + 0.15 * torch.randn(3, size, size, generator=generator)).clamp(0, 1).unsqueeze(0)


def absolute_style_loss(vgg, image: torch.Tensor, style: torch.Tensor) -> float:
    features = vgg(image, STYLE_LAYERS)
    return style_loss({l: gram_matrix(features[l]) for l in STYLE_LAYERS}, target_grams(vgg, style)).item()


def test_slow_path_reduces_the_style_loss_a_lot(vgg):
    content, style = make_content(), make_style()
    result = slow_stylize(content, style, vgg, SlowConfig(steps=30, min_side=16))
    assert result.shape == content.shape
    assert result.dtype == content.dtype
    assert 0 <= result.min() and result.max() <= 1
    before = absolute_style_loss(vgg, content, style)
    after = absolute_style_loss(vgg, result, style)
    assert after < 0.2 * before, (before, after)


def test_adam_optimizer_also_reduces_the_style_loss(vgg):
    content, style = make_content(32, 32), make_style(48)
    result = slow_stylize(content, style, vgg, SlowConfig(steps=20, optimizer="adam", scales=(1.0,)))
    assert absolute_style_loss(vgg, result, style) < 0.8 * absolute_style_loss(vgg, content, style)


def test_progress_is_monotonic_ends_at_one_and_counts_the_steps(vgg):
    calls: list[float] = []
    steps = 7
    slow_stylize(make_content(), make_style(), vgg, SlowConfig(steps=steps, min_side=16), progress=calls.append)
    assert calls == sorted(calls)
    assert all(0.0 <= c <= 1.0 for c in calls)
    assert calls[0] == 0.0 and calls[-1] == 1.0
    # one report at the start, one after each step, one at the end: the step bound holds
    assert len(calls) == steps + 2


def test_steps_are_split_over_the_scales_and_tiny_scales_skipped(vgg):
    calls: list[float] = []
    content = make_content(40, 40)  # half size (20 px) is below min_side=32: single scale
    result = slow_stylize(
        content, make_style(), vgg, SlowConfig(steps=3, scales=(0.25, 0.5, 1.0)), progress=calls.append
    )
    assert result.shape == content.shape
    assert len(calls) == 3 + 2


def test_init_image_is_the_starting_point(vgg):
    content, style = make_content(32, 32), make_style(32)
    init = torch.full_like(content, 0.5)
    result = slow_stylize(content, style, vgg, SlowConfig(steps=1, scales=(1.0,), lr=1e-6), init=init)
    # a (tiny) step from the grey init, not from the content
    assert (result - init).abs().max() < 0.05
    assert (result - content).abs().max() > 0.2


def test_cancel_raises_promptly(vgg):
    cancel = threading.Event()
    calls: list[float] = []

    def progress(fraction: float) -> None:
        calls.append(fraction)
        if len(calls) == 3:
            cancel.set()

    with pytest.raises(CancelledError):
        slow_stylize(
            make_content(), make_style(), vgg, SlowConfig(steps=50, min_side=16), progress=progress, cancel=cancel
        )
    assert len(calls) == 3  # no further step ran after the flag was set


def test_cancel_set_before_the_start_raises_before_any_step(vgg):
    cancel = threading.Event()
    cancel.set()
    calls: list[float] = []
    with pytest.raises(CancelledError):
        slow_stylize(make_content(), make_style(), vgg, SlowConfig(steps=50), progress=calls.append, cancel=cancel)
    assert max(calls, default=0.0) == 0.0


def test_time_limit_stops_early_and_returns_the_best_image(vgg):
    calls: list[float] = []
    content = make_content()
    started = time.monotonic()
    result = slow_stylize(
        content, make_style(), vgg, SlowConfig(steps=100_000, time_limit_s=1.0, min_side=16), progress=calls.append
    )
    assert time.monotonic() - started < 60  # generous: the limit is 1 s, a step is well under that
    assert len(calls) < 100_000
    assert calls[-1] == 1.0
    assert result.shape == content.shape and torch.isfinite(result).all()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"steps": 0}, "0"),
        ({"steps": 2.5}, "2.5"),
        ({"time_limit_s": -1.0}, "-1.0"),
        ({"time_limit_s": math.inf}, "inf"),
        ({"scales": (1.0, 0.5)}, "(1.0, 0.5)"),
        ({"scales": (0.5,)}, "(0.5,)"),
        ({"scales": ()}, "()"),
        ({"style_weight": -1.0}, "-1.0"),
        ({"tv_weight": math.nan}, "nan"),
        ({"optimizer": "sgd"}, "'sgd'"),
        ({"lr": 0.0}, "0.0"),
        ({"style_layers": ("relu9_9",)}, "relu9_9"),
        ({"style_layer_weights": {"relu4_2": 1.0}}, "relu4_2"),
        ({"style_layer_weights": {"relu4_1": -2.0}}, "-2.0"),
    ],
)
def test_config_rejects_bad_values_naming_them(kwargs, fragment):
    with pytest.raises(InvalidParameterError, match=None) as info:
        SlowConfig(**kwargs)
    assert fragment in str(info.value)


def test_bad_image_shapes_are_rejected(vgg):
    with pytest.raises(InvalidParameterError, match="content"):
        slow_stylize(torch.rand(3, 32, 32), make_style(), vgg, SlowConfig(steps=1))
    with pytest.raises(InvalidParameterError, match="style"):
        slow_stylize(make_content(), torch.rand(1, 1, 32, 32), vgg, SlowConfig(steps=1))
    with pytest.raises(InvalidParameterError, match="init"):
        slow_stylize(make_content(), make_style(), vgg, SlowConfig(steps=1), init=torch.rand(1, 3, 8, 8))


def test_on_step_sees_every_step_in_range(vgg):
    content, style = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    seen = []
    slow_stylize(content, style, vgg, SlowConfig(steps=4, scales=(1.0,)), on_step=lambda p: seen.append(p.clone()))
    assert len(seen) == 4
    assert all(p.shape == content.shape and p.min() >= 0 and p.max() <= 1 for p in seen)
    assert not torch.equal(seen[0], seen[-1])


def test_style_layer_weights_steer_which_layer_is_fitted(vgg):
    content, style = make_content(), make_style()
    only_deep = SlowConfig(
        steps=6,
        scales=(1.0,),
        content_weight=0.0,
        tv_weight=0.0,
        style_layer_weights={"relu1_1": 0.0, "relu2_1": 0.0, "relu3_1": 0.0, "relu5_1": 0.0},
    )
    only_colour = SlowConfig(
        steps=6,
        scales=(1.0,),
        content_weight=0.0,
        tv_weight=0.0,
        style_layer_weights={"relu2_1": 0.0, "relu3_1": 0.0, "relu4_1": 0.0, "relu5_1": 0.0},
    )
    grams = target_grams(vgg, style)

    def relative_error(image, layer):
        gram = gram_matrix(vgg(image, (layer,))[layer])
        return ((gram - grams[layer]).pow(2).sum() / grams[layer].pow(2).sum()).item()

    deep, colour = slow_stylize(content, style, vgg, only_deep), slow_stylize(content, style, vgg, only_colour)
    # The run told to weigh relu4_1 fits it far better than the run that ignored it.
    assert relative_error(deep, "relu4_1") < 0.5 * relative_error(colour, "relu4_1")
