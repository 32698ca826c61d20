"""Decoding uploads into RGB tensors and encoding results, safely.

Any format Pillow decodes; EXIF orientation applied; L/P/CMYK/I;16/... converted
to RGB; an alpha channel is kept aside to re-attach to the result; images over
a pixel budget are refused before their pixels are decoded (decompression
bombs); larger-than-wanted images are downscaled.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor, to_pil_image

from model.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaTypeError

DEFAULT_MAX_PIXELS = 40_000_000  # refuse before decoding above this
MIN_SIDE = 16
# We check the pixel count ourselves (with the caller's limit and a message that
# names the size) right after reading the header, so Pillow's global guard is off.
Image.MAX_IMAGE_PIXELS = None  # the network's reflection padding needs a few pixels
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
FORMAT_ALIASES = {"jpg": "jpeg"}


@dataclass
class DecodedImage:
    rgb: Image.Image  # mode RGB, upright
    alpha: Image.Image | None  # mode L, same size, or None
    source_format: str | None


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImageError("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"the image is too large to decode safely: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError("the upload is not an image format we can decode (tried every Pillow format)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow raises these for corrupt headers
        raise InvalidImageError(f"the image is corrupt or truncated: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )
    return image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> DecodedImage:
    """Decode ``data`` to an upright RGB image (+ alpha), downscaled to ``max_side``."""
    image = _open_checked(data, max_pixels)
    source_format = image.format
    try:
        with warnings.catch_warnings():
            # Pillow's bomb check is ours (max_pixels, checked above); its warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image) or image
            alpha = None
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                image = image.convert("RGBA")
                alpha = image.getchannel("A")
            rgb = _to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"the image data is corrupt or truncated: {exc}") from exc
    if min(rgb.size) < MIN_SIDE:
        raise InvalidImageError(f"the image is {rgb.size[0]}x{rgb.size[1]}; each side must be at least {MIN_SIDE} px")
    if max_side is not None and max(rgb.size) > max_side:
        rgb, alpha = downscale(rgb, max_side), (downscale(alpha, max_side) if alpha is not None else None)
    return DecodedImage(rgb=rgb, alpha=alpha, source_format=source_format)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: scale the full range to 8 bits instead of clipping.
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        lo, hi = float(tensor.min()), float(tensor.max())
        scale = 65535.0 if image.mode.startswith("I;16") else max(hi, 1.0)
        if image.mode == "F":
            tensor, scale = tensor - lo, max(hi - lo, 1e-12)
        gray = (tensor / scale).clamp(0, 1).mul(255).round().to(torch.uint8)
        return to_pil_image(gray.unsqueeze(0)).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV, RGBA, ...


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is ``max_side`` (never enlarges)."""
    width, height = image.size
    if max(width, height) <= max_side:
        return image
    scale = max_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def downscale_tensor(image: torch.Tensor, max_side: int, min_side: int = 1) -> torch.Tensor:
    """Shrink a (B, 3, H, W) tensor so its longer side is at most ``max_side`` (never enlarges);
    no side goes below ``min_side`` (VGG needs a few pixels left after its poolings)."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(min_side, round(height * scale)), max(min_side, round(width * scale)))
    return torch.nn.functional.interpolate(image, size=size, mode="bilinear", align_corners=False,
                                           antialias=True).clamp(0, 1)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (1, 3, H, W) in [0, 1]."""
    return pil_to_tensor(image.convert("RGB")).float().div(255.0).unsqueeze(0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> RGB PIL image."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    return to_pil_image(tensor.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu())


def normalize_format(fmt: str) -> str:
    key = FORMAT_ALIASES.get(fmt.lower().strip(), fmt.lower().strip())
    if key not in OUTPUT_FORMATS:
        raise UnsupportedMediaTypeError(f"output format {fmt!r} is not supported; use one of png, jpeg, webp")
    return key


def encode_image(image: Image.Image, fmt: str = "png", alpha: Image.Image | None = None, quality: int = 92) -> bytes:
    """Encode to PNG/JPEG/WebP; alpha re-attached where the format keeps it."""
    key = normalize_format(fmt)
    pil_format, _ = OUTPUT_FORMATS[key]
    if alpha is not None and key in ("png", "webp"):
        if alpha.size != image.size:
            alpha = alpha.resize(image.size, Image.Resampling.LANCZOS)
        image = image.convert("RGBA")
        image.putalpha(alpha)
    else:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"quality": quality} if key in ("jpeg", "webp") else {}
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def media_type(fmt: str) -> str:
    return OUTPUT_FORMATS[normalize_format(fmt)][1]


def load_image_file(path, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file from disk to upright RGB (used by training and the CLI)."""
    with open(path, "rb") as handle:
        return decode_image(handle.read(), max_pixels=max_pixels, max_side=max_side).rgb
