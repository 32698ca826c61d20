"""Fixtures for the training tests: the real VGG-19, tiny banks, generated photos and paintings."""

from pathlib import Path

import torch
from PIL import Image

from model.bank import StyleInfo, save_bank
from model.transformer import TransformerConfig, TransformerNet


def photo(seed: int, height: int = 48, width: int = 64) -> torch.Tensor:
    """A smooth 'photo': a colour gradient with a few soft blobs, (3, H, W) uint8."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
    x = torch.linspace(0, 1, width).view(1, width).expand(height, width)
    base = torch.rand(3, 1, 1, generator=generator)
    slope = torch.rand(3, 1, 1, generator=generator) - 0.5
    image = base + slope * (x + y)
    for _ in range(3):
        cx, cy, radius = torch.rand(3, generator=generator).tolist()
        blob = torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (0.02 + 0.05 * radius))
        image = image + (torch.rand(3, 1, 1, generator=generator) - 0.5) * blob
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


def painting(seed: int, size: int = 64) -> torch.Tensor:
    """A 'painting': bold coloured stripes at a seed-dependent angle and period, (3, S, S) uint8."""
    generator = torch.Generator().manual_seed(seed + 1000)
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    angle = torch.rand(1, generator=generator) * 3.1416
    period = 4 + 6 * torch.rand(1, generator=generator)
    stripes = (torch.sin((x * torch.cos(angle) + y * torch.sin(angle)) / period) > 0).float()
    colour_a, colour_b = torch.rand(3, 1, 1, generator=generator), torch.rand(3, 1, 1, generator=generator)
    image = stripes * colour_a + (1 - stripes) * colour_b + 0.1 * torch.randn(3, size, size, generator=generator)
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


def save_png(tensor: torch.Tensor, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(tensor.permute(1, 2, 0).numpy(), "RGB").save(path)
    return path


def write_photos(folder: Path, count: int, height: int = 48, width: int = 64) -> list[Path]:
    return [save_png(photo(i, height, width), folder / f"photo_{i:02d}.png") for i in range(count)]


def write_paintings(folder: Path, names: list[str], size: int = 64) -> list[Path]:
    return [save_png(painting(i, size), folder / f"{name}.png") for i, name in enumerate(names)]


def tiny_network(n_styles: int, seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    network = TransformerNet(TransformerConfig(n_styles=n_styles, channels=(4, 8, 8), n_residual=1, outer_kernel=3))
    with torch.no_grad():  # distinct rows, so styles differ and the mean row is not any one of them
        for norm in network.norm_layers():
            norm.gamma.add_(torch.randn_like(norm.gamma) * 0.3)
            norm.beta.add_(torch.randn_like(norm.beta) * 0.3)
    return network.eval()


def write_tiny_bank(folder: Path, names: list[str], source_files: list[Path] | None = None) -> Path:
    styles = [
        StyleInfo(
            name,
            metadata={
                "training_steps": 0,
                **({"source_file": source_files[i].name} if source_files else {}),
                "loss_weights": {"content": 1.0, "style": 3.0, "tv": 0.1},
            },
        )
        for i, name in enumerate(names)
    ]
    return save_bank(folder, tiny_network(len(names)), styles, provenance={"note": "test bank"})
