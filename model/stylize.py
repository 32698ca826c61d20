"""The fast path: run the CIN network on an image with a style mix."""

import torch

from model.errors import InvalidParameterError
from model.runner import Runner, as_runner
from model.transformer import TransformerNet

# ITU-R BT.601 luma, as in Gatys et al. 2016 "Preserving color in neural artistic style transfer"
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", _YIQ_TO_RGB.to(image), image)


def preserve_colors(stylized: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Luminance from the stylized image, chrominance (I, Q) from the original."""
    luma = rgb_to_yiq(stylized)[:, :1]
    chroma = rgb_to_yiq(original)[:, 1:]
    return yiq_to_rgb(torch.cat([luma, chroma], dim=1)).clamp(0, 1)


def check_strength(strength: float) -> float:
    if not (0.0 <= strength <= 1.0):  # also rejects NaN
        raise InvalidParameterError(f"strength must be between 0 and 1, got {strength}")
    return float(strength)


def mix_with_original(
    stylized: torch.Tensor, original: torch.Tensor, strength: float = 1.0, preserve_color: bool = False
) -> torch.Tensor:
    """The one place the service's ``strength`` and ``preserve_color`` are applied (fast and slow path, CLI).

    ``preserve_color`` keeps the original's chrominance (luminance from the stylized
    image); ``strength`` then mixes linearly with the original (1 = fully stylized)."""
    strength = check_strength(strength)
    original = original.to(stylized)
    if preserve_color:
        stylized = preserve_colors(stylized, original)
    if strength < 1.0:
        stylized = torch.lerp(original, stylized, strength)
    return stylized


@torch.inference_mode()
def stylize_tensor(
    network: "TransformerNet | Runner",
    image: torch.Tensor,
    style_weights: torch.Tensor,
    strength: float = 1.0,
    preserve_color: bool = False,
) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1] -> stylized (1, 3, H, W) in [0, 1], with any runner (or a bare network).

    ``strength`` mixes the result with the original (1 = fully stylized);
    ``preserve_color`` keeps the original colours and transfers only luminance.
    """
    strength = check_strength(strength)
    runner = as_runner(network)
    source = image.to(device=runner.device, dtype=runner.dtype)
    output = runner(source, style_weights.to(device=runner.device, dtype=runner.dtype))
    return mix_with_original(output, source, strength, preserve_color).float().clamp(0, 1)
