"""The fast path: run the CIN network on an image with a style mix.

`stylize_image` is what the service and the CLI call: uint8 image in, uint8 image out,
any size up to the output limit (tiles, `model.tiling`), with the stroke size
``style_scale`` and the ``strength`` / ``preserve_color`` mix applied a band of rows at a
time, so no full-size float copy of the image is ever held. `stylize_pixels_tensor` does the
same for uint8 pixels already on the network's device (JPEG decoded on a GPU), in float on
the device. `stylize_tensor` is the float-tensor form used by training, evaluation and the
nearest-blend search.
"""

import numpy as np
import torch
from PIL import Image

from model.errors import InvalidParameterError
from model.imageio import resize_tensor
from model.runner import Runner, as_runner
from model.tiling import as_tiling_runner
from model.transformer import TransformerNet

STYLE_SCALE_MIN, STYLE_SCALE_MAX = 0.25, 4.0
MAX_WORK_SIDE = 8192  # style_scale < 1 runs the network on an enlarged image: never larger than this
MIX_ROWS = 256  # rows mixed with the original at a time

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


def check_style_scale(style_scale: float) -> float:
    if not (STYLE_SCALE_MIN <= style_scale <= STYLE_SCALE_MAX):  # also rejects NaN
        raise InvalidParameterError(
            f"style_scale must be between {STYLE_SCALE_MIN:g} and {STYLE_SCALE_MAX:g}, got {style_scale}"
        )
    return float(style_scale)


def work_size(size: tuple[int, int], style_scale: float, max_work_side: int = MAX_WORK_SIDE) -> tuple[int, int]:
    """The size the network runs at for ``style_scale``: ``size / style_scale``, its longer side at most
    ``max_work_side`` (but never below ``size``'s) and each side at least 16 px."""
    width, height = size
    factor = 1.0 / style_scale
    factor = min(factor, max(1.0, max_work_side / max(width, height)))
    return max(min(width, 16), round(width * factor)), max(min(height, 16), round(height * factor))


def _tiling_and_weights(runner: "TransformerNet | Runner", style_weights: torch.Tensor):
    """The tiling runner around ``runner`` and the style weights on its device and dtype."""
    tiling = as_tiling_runner(as_runner(runner))
    return tiling, style_weights.to(device=tiling.device, dtype=tiling.dtype)


@torch.inference_mode()
def stylize_image(
    runner: "TransformerNet | Runner",
    image: Image.Image,
    style_weights: torch.Tensor,
    strength: float = 1.0,
    preserve_color: bool = False,
    style_scale: float = 1.0,
    max_work_side: int = MAX_WORK_SIDE,
) -> Image.Image:
    """An RGB image -> the stylized RGB image of the same size, in bounded memory at any size.

    ``style_scale`` sets the stroke size: the network runs on the image resized by
    1 / style_scale (its strokes have a fixed size in pixels, so relative to the picture
    they grow with style_scale), and the result is resized back (Lanczos down, bicubic up)."""
    strength, style_scale = check_strength(strength), check_style_scale(style_scale)
    tiling, weights = _tiling_and_weights(runner, style_weights)
    size = image.size
    work = work_size(size, style_scale, max_work_side)
    if work == size:
        pixels = tiling.stylize_array(image, weights)
    else:
        filter_in = Image.Resampling.LANCZOS if work[0] < size[0] else Image.Resampling.BICUBIC
        stylized = Image.fromarray(tiling.stylize_array(image.resize(work, filter_in), weights), "RGB")
        filter_out = Image.Resampling.LANCZOS if work[0] > size[0] else Image.Resampling.BICUBIC
        pixels = np.array(stylized.resize(size, filter_out))
        del stylized
    if strength < 1.0 or preserve_color:
        for top in range(0, size[1], MIX_ROWS):
            bottom = min(size[1], top + MIX_ROWS)
            band = torch.from_numpy(pixels[top:bottom]).permute(2, 0, 1).unsqueeze(0).float().div_(255)
            original = np.array(image.crop((0, top, size[0], bottom)))
            original_band = torch.from_numpy(original).permute(2, 0, 1).unsqueeze(0).float().div_(255)
            mixed = mix_with_original(band, original_band, strength, preserve_color)
            pixels[top:bottom] = mixed[0].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(pixels, "RGB")


@torch.inference_mode()
def stylize_pixels_tensor(
    runner: "TransformerNet | Runner",
    pixels: torch.Tensor,
    style_weights: torch.Tensor,
    strength: float = 1.0,
    preserve_color: bool = False,
    style_scale: float = 1.0,
    max_work_side: int = MAX_WORK_SIDE,
) -> torch.Tensor:
    """`stylize_image` for (3, H, W) uint8 pixels: the stylized (3, H, W) uint8 pixels on the runner's device.

    The image is held in float on the device (on a GPU, where this runs, that is small against its memory);
    larger than a tile, it still goes through in tiles with whole-image statistics."""
    strength, style_scale = check_strength(strength), check_style_scale(style_scale)
    tiling, weights = _tiling_and_weights(runner, style_weights)
    original = pixels.to(tiling.device).unsqueeze(0).to(tiling.dtype).div_(255)
    size = (int(pixels.shape[-1]), int(pixels.shape[-2]))
    work = work_size(size, style_scale, max_work_side)
    if work == size:
        stylized = tiling(original, weights)
    else:
        stylized = resize_tensor(tiling(resize_tensor(original, work), weights), size)
    mixed = mix_with_original(stylized, original, strength, preserve_color)
    return mixed[0].float().clamp_(0, 1).mul_(255).round_().to(torch.uint8)
