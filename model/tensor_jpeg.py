"""JPEG uploads decoded, and JPEG results encoded, as uint8 tensors on the network's device (TorchCodec).

On a GPU the network takes ~10 ms at 1024 px, and Pillow's codecs on the CPU were most of
a request's time; TorchCodec decodes and encodes JPEG with nvJPEG on CUDA, so the pixels go
straight from the upload's bytes to the GPU and back. (TorchCodec 0.16 took over torchvision.io's
image codecs, deprecated since torchvision 0.29; importing it does not load torchvision's compiled ops.)
On the CPU its libjpeg-turbo gives exactly Pillow's pixels and, at the same quality, Pillow's
bytes (tested), which is how the path is tested without a GPU; nvJPEG's IDCT may differ from
libjpeg's by a level or so.

`decode_jpeg_tensor` keeps everything `model.imageio.decode_image` promises: the pixel budget
and the thin-image refusal from the header, before any pixel is decoded; EXIF orientation;
grayscale as RGB. It answers None for what it does not take, and the caller decodes with
Pillow as before: other formats, CMYK/YCCK JPEGs (Pillow's colour conversion stays the one),
and any file TorchCodec cannot read (Pillow then decodes it, or says what is wrong). A JPEG
has no alpha channel, so none is lost. Downscaling to ``max_side`` is antialiased bicubic on the
device instead of Pillow's Lanczos.
"""

import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from PIL import ExifTags, Image

from model.imageio import DEFAULT_MAX_PIXELS, _open_checked, check_size, fitted_size, resize_tensor

# The codec pool's threads take turns on the GPU's codecs (each call is a few ms; no reliance on nvJPEG
# handles being safe to share).
_CUDA_CODEC_LOCK = threading.Lock()


@dataclass
class DecodedTensor:
    """A decoded upload as pixels on the device; `model.imageio.DecodedImage`'s counterpart (no alpha: JPEG)."""

    pixels: torch.Tensor  # (3, H, W) uint8, upright
    source_format: str = "JPEG"
    alpha: None = None

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


def _codec_lock(device: torch.device) -> AbstractContextManager:
    return _CUDA_CODEC_LOCK if device.type == "cuda" else nullcontext()


def resize_uint8(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, height, width) uint8 for ``size`` = (width, height): antialiased bicubic."""
    resized = resize_tensor(pixels[None].float().div_(255), size)
    return resized[0].mul_(255).round_().to(torch.uint8)


def decode_jpeg_tensor(
    data: bytes, device: torch.device, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> DecodedTensor | None:
    """A JPEG upload -> its upright RGB pixels on ``device``, fitted to ``max_side``; None when Pillow should decode
    it (see the module docstring). Too many pixels or too thin: the same errors as `decode_image`, before decoding."""
    from torchcodec.decoders import decode_jpeg

    image = _open_checked(data, max_pixels)
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):
        return None
    check_size(image.size, max_side)  # before decoding, in the file's orientation, as decode_image checks it
    # TorchCodec turns the image upright itself (EXIF orientation, on the CPU and on CUDA); the shape it
    # comes back in must be the one Pillow's reading of the tag gives, else Pillow decodes it.
    orientation = _orientation(image)
    if orientation not in range(1, 9):
        return None
    width, height = image.size
    upright = (width, height) if orientation <= 4 else (height, width)
    try:
        with _codec_lock(device):
            pixels = decode_jpeg(data, mode="RGB", device=device)
    except (RuntimeError, ValueError):  # corrupt or truncated: Pillow decodes it or says what is wrong
        return None
    if tuple(pixels.shape) != (3, upright[1], upright[0]):
        return None
    target = fitted_size(upright, max_side)
    if target != upright:
        pixels = resize_uint8(pixels, target)
    return DecodedTensor(pixels)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag as ImageOps.exif_transpose reads it (1: upright)."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except (TypeError, ValueError, OSError, SyntaxError):  # a malformed EXIF block
        return 0  # not an orientation: Pillow decodes it


def encode_jpeg_tensor(pixels: torch.Tensor, quality: int) -> bytes:
    """(3, H, W) uint8 on any device -> JPEG bytes, encoded where the pixels are (nvJPEG on CUDA)."""
    from torchcodec.encoders import JpegEncoder

    with _codec_lock(pixels.device):
        encoded = JpegEncoder(pixels.contiguous()).to_tensor(quality=quality)
    return encoded.cpu().numpy().tobytes()


def unavailable_reason(device: torch.device) -> str | None:
    """Why the tensor JPEG codecs cannot run on ``device`` here (None: they can): a round trip of a small image."""
    try:
        probe = torch.arange(3 * 16 * 16, dtype=torch.int32).remainder(251).to(torch.uint8).reshape(3, 16, 16)
        encoded = encode_jpeg_tensor(probe.to(device), quality=90)
        from torchcodec.decoders import decode_jpeg

        decoded = decode_jpeg(encoded, mode="RGB", device=device)
    except (ImportError, OSError, RuntimeError, ValueError) as exc:  # not installed, a torch it was not built for, ...
        return f"{type(exc).__name__}: {exc}"
    if tuple(decoded.shape) != (3, 16, 16) or decoded.device.type != device.type:
        return f"a 16x16 round trip came back as {tuple(decoded.shape)} on {decoded.device}"
    return None
