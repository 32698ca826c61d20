"""Decoding uploads into RGB tensors and encoding results, safely.

Any format Pillow decodes; EXIF orientation applied; L/P/CMYK/I;16/... converted
to RGB; an alpha channel is kept aside to re-attach to the result; images over
a pixel budget are refused before their pixels are decoded (decompression
bombs); larger-than-wanted images are downscaled. The final size is known from
the header, so an image whose shorter side would end up under `MIN_SIDE`
(a thin strip fitted to ``max_side``) is refused before decoding too, and a
large JPEG is decoded at a reduced DCT scale when the result is much smaller.
"""

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from model.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaTypeError

DEFAULT_MAX_PIXELS = 40_000_000  # refuse before decoding above this
MIN_SIDE = 16  # each side, after fitting max_side: the network's reflection padding needs a few pixels
# We check the pixel count ourselves (with the caller's limit and a message that
# names the size) right after reading the header, so Pillow's global guard is off.
Image.MAX_IMAGE_PIXELS = None
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (Image.draft) only while that leaves at
# least this many times the target size, so the final LANCZOS step still has pixels
# to average (the reducing gap Image.thumbnail uses by default).
DRAFT_REDUCING_GAP = 2
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


def fitted_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """``size`` shrunk so its longer side is ``max_side`` (never enlarged), as `downscale` does it."""
    width, height = size
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size an image of ``size`` gets at ``max_side``; `InvalidImageError` if a side would be under MIN_SIDE.

    Only min and max of the size matter, so the answer is the same (transposed)
    whichever way EXIF orientation turns the image."""
    width, height = size
    fitted = fitted_size(size, max_side)
    if min(size) < MIN_SIDE:
        raise InvalidImageError(f"the image is {width}x{height}; each side must be at least {MIN_SIDE} px")
    if min(fitted) < MIN_SIDE:
        assert max_side is not None
        example = f"{MIN_SIDE}x{max_side}" if width < height else f"{max_side}x{MIN_SIDE}"
        raise InvalidImageError(
            f"the image is {width}x{height}: fitted to max_side={max_side} it would be {fitted[0]}x{fitted[1]}, "
            f"but each side must be at least {MIN_SIDE} px; at max_side={max_side} the aspect ratio may be at most "
            f"about {max_side / MIN_SIDE:g}:1 (e.g. {example}): crop the image, or use a larger max_side"
        )
    return fitted


def fitted_pixels(data: bytes, max_side: int | None) -> int | None:
    """How many pixels ``data`` will have once decoded and fitted to ``max_side``, from its header alone
    (no pixel is decoded); None when the header cannot be read (decoding then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = Image.open(io.BytesIO(data)).size
    except Exception:  # noqa: BLE001 - any unreadable header is decode_image's to report
        return None
    width, height = fitted_size(size, max_side)
    return width * height


def _draft_jpeg(image: Image.Image, target: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """Have a JPEG decode at 1/2, 1/4 or 1/8 scale when ``target`` is that much smaller.

    Returns the box of the drafted image that covers the whole picture (for the exact
    resize), or None when the image is decoded at full size."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L", "CMYK"):
        return None
    width, height = image.size
    wanted = (target[0] * DRAFT_REDUCING_GAP, target[1] * DRAFT_REDUCING_GAP)
    if min(width // wanted[0], height // wanted[1]) < 2:
        return None
    drafted = image.draft("RGB", wanted)
    if drafted is None or image.size == (width, height):
        return None
    return drafted[1]


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> DecodedImage:
    """Decode ``data`` to an upright RGB image (+ alpha), downscaled to ``max_side``.

    Refused before the pixels are decoded: over ``max_pixels`` (`ImageTooLargeError`),
    or a side under `MIN_SIDE` once fitted to ``max_side`` (`InvalidImageError`)."""
    image = _open_checked(data, max_pixels)
    target = check_size(image.size, max_side)  # in the file's orientation (before EXIF)
    source_format = image.format
    try:
        with warnings.catch_warnings():
            # Pillow's bomb check is ours (max_pixels, checked above); its warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            box = _draft_jpeg(image, target)
            image.load()
            if box is not None:  # to the exact size now, in the file's orientation (EXIF is kept in info)
                image = image.resize(target, Image.Resampling.LANCZOS, box=box)
            elif image.size != target and image.mode in _RESIZABLE_MODES:
                # Shrink before any copy (EXIF turn, mode conversion): a 40 Mpx upload then costs one
                # full-size buffer while it is decoded, not three.
                image = image.resize(target, Image.Resampling.LANCZOS)
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
    check_size(rgb.size, max_side)  # again on what was decoded (a format may report another size)
    if max_side is not None and max(rgb.size) > max_side:
        rgb, alpha = downscale(rgb, max_side), (downscale(alpha, max_side) if alpha is not None else None)
    return DecodedImage(rgb=rgb, alpha=alpha, source_format=source_format)


# Modes Pillow resamples with LANCZOS as they are (P, 1 and 16-bit modes are converted first).
_RESIZABLE_MODES = ("RGB", "RGBA", "L", "LA", "CMYK", "F")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / 32-bit grayscale: scale the full range to 8 bits instead of clipping.
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        lo, hi = float(tensor.min()), float(tensor.max())
        scale = 65535.0 if image.mode.startswith("I;16") else max(hi, 1.0)
        if image.mode == "F":
            tensor, scale = tensor - lo, max(hi - lo, 1e-12)
        gray = (tensor / scale).clamp(0, 1).mul(255).round().to(torch.uint8)
        return Image.fromarray(gray.numpy(), "L").convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, P, CMYK, YCbCr, LAB, HSV, RGBA, ...


def downscale(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink so the longer side is ``max_side`` (never enlarges)."""
    size = fitted_size(image.size, max_side)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def resize_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> ``size`` = (width, height), antialiased bicubic (the tensor form of Pillow's
    Lanczos down / bicubic up), in [0, 1] and ``image``'s dtype (computed in float32: half has no antialias)."""
    resized = torch.nn.functional.interpolate(
        image.float(), size=(size[1], size[0]), mode="bicubic", antialias=True, align_corners=False
    )
    return resized.clamp_(0, 1).to(image.dtype)


def downscale_tensor(image: torch.Tensor, max_side: int, min_side: int = 1) -> torch.Tensor:
    """Shrink a (B, 3, H, W) tensor so its longer side is at most ``max_side`` (never enlarges);
    no side goes below ``min_side`` (VGG needs a few pixels left after its poolings)."""
    height, width = image.shape[-2:]
    if max(height, width) <= max_side:
        return image
    scale = max_side / max(height, width)
    size = (max(min_side, round(height * scale)), max(min_side, round(width * scale)))
    return torch.nn.functional.interpolate(
        image, size=size, mode="bilinear", align_corners=False, antialias=True
    ).clamp(0, 1)


# Two plain array conversions instead of torchvision's: importing torchvision in the server
# maps its compiled ops, about 170 MB of resident memory per process, for these two lines.
def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (1, 3, H, W) in [0, 1]."""
    array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> RGB PIL image."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    pixels = tensor.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    return Image.fromarray(pixels.cpu().numpy(), "RGB")


def normalize_format(fmt: str) -> str:
    key = FORMAT_ALIASES.get(fmt.lower().strip(), fmt.lower().strip())
    if key not in OUTPUT_FORMATS:
        raise UnsupportedMediaTypeError(f"output format {fmt!r} is not supported; use one of png, jpeg, webp")
    return key


@dataclass(frozen=True)
class EncodeOptions:
    """How results are encoded: speed against size. PNG level 1 is ~2x faster than Pillow's default 6 on a
    stylized photo for ~10 % more bytes (benchmarks/codecs.py); JPEG and WebP quality as usual (1-100)."""

    png_compress_level: int = 1
    jpeg_quality: int = 92
    webp_quality: int = 92

    def __post_init__(self) -> None:
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be 0-9, got {self.png_compress_level}")
        for name in ("jpeg_quality", "webp_quality"):
            if not 1 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} must be 1-100, got {getattr(self, name)}")

    def save_options(self, key: str) -> dict[str, int]:
        if key == "png":
            return {"compress_level": self.png_compress_level}
        return {"quality": self.jpeg_quality if key == "jpeg" else self.webp_quality}


def encode_image(
    image: Image.Image,
    fmt: str = "png",
    alpha: Image.Image | None = None,
    quality: int | None = None,
    options: EncodeOptions | None = None,
) -> bytes:
    """Encode to PNG/JPEG/WebP; alpha re-attached where the format keeps it. ``quality`` overrides
    ``options``' JPEG/WebP quality."""
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
    save_options = (options or EncodeOptions()).save_options(key)
    if quality is not None and key in ("jpeg", "webp"):
        save_options["quality"] = quality
    image.save(buffer, format=pil_format, **save_options)
    return buffer.getvalue()


def media_type(fmt: str) -> str:
    return OUTPUT_FORMATS[normalize_format(fmt)][1]


def load_image_file(path, max_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file from disk to upright RGB (used by training and the CLI)."""
    with open(path, "rb") as handle:
        return decode_image(handle.read(), max_pixels=max_pixels, max_side=max_side).rgb


THUMBNAIL_SIDE = 256  # painting thumbnails: small enough to ship with the bank, large enough for a gallery card


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = 85) -> bytes:
    """``image`` fitted inside ``side`` x ``side`` (never enlarged), as JPEG bytes: a painting's gallery thumbnail."""
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()
