"""The work behind the endpoints, as plain blocking functions (run in worker threads).

Decode -> stylize -> encode with `model.imageio` and `model.stylize`; the slow
path and style learning call `model.slow` and `training.add_style`. No maths
here: the app only moves images between bytes and tensors.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from app.live_bank import BankSnapshot
from model.bank import StyleBank
from model.errors import CinstyleError
from model.imageio import (
    DecodedImage,
    EncodeOptions,
    decode_image,
    downscale,
    encode_image,
    image_to_tensor,
    media_type,
    normalize_format,
    tensor_to_image,
)
from model.runner import Runner
from model.style_spec import StyleMix
from model.stylize import mix_with_original, stylize_image, stylize_pixels_tensor
from model.tensor_jpeg import DecodedTensor, decode_jpeg_tensor, encode_jpeg_tensor

log = logging.getLogger(__name__)
Progress = Callable[[float], None]
Decoded = DecodedImage | DecodedTensor  # Pillow's image, or a JPEG's pixels on the network's device
Pixels = Image.Image | torch.Tensor  # a stylized image: Pillow's, or (3, H, W) uint8 on the device


@dataclass(frozen=True)
class Rendered:
    data: bytes
    media_type: str
    width: int
    height: int
    inference_ms: float


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def decode_upload(data: bytes, max_pixels: int, max_side: int, jpeg_device: torch.device | None = None) -> Decoded:
    """Bytes -> upright RGB (+ alpha), refused before decoding if over ``max_pixels``, shrunk to ``max_side``.

    With ``jpeg_device`` a JPEG that TorchCodec takes is decoded onto that device (`model.tensor_jpeg`)."""
    if jpeg_device is not None:
        decoded = decode_jpeg_tensor(data, jpeg_device, max_pixels=max_pixels, max_side=max_side)
        if decoded is not None:
            return decoded
    return decode_image(data, max_pixels=max_pixels, max_side=max_side)


def encode_result(
    result: "torch.Tensor | Image.Image",
    decoded: Decoded,
    fmt: str,
    inference_ms: float,
    options: EncodeOptions | None = None,
    *,
    jpeg_on_device: bool = False,
) -> Rendered:
    """A result -> bytes. ``result``: a Pillow image, (3, H, W) uint8 pixels (JPEG-encoded where they are when
    ``jpeg_on_device``), or a (1, 3, H, W) float tensor."""
    if isinstance(result, torch.Tensor) and result.dtype == torch.uint8:
        height, width = int(result.shape[-2]), int(result.shape[-1])
        if jpeg_on_device and normalize_format(fmt) == "jpeg":
            try:
                data = encode_jpeg_tensor(result, (options or EncodeOptions()).jpeg_quality)
                return Rendered(data, media_type(fmt), width, height, inference_ms)
            except RuntimeError:  # the device's encoder failed (it passed the start-up probe): Pillow answers
                log.exception("encoding a JPEG on %s failed; Pillow encodes it", result.device)
        result = Image.fromarray(result.permute(1, 2, 0).cpu().numpy(), "RGB")
    image = result if isinstance(result, Image.Image) else tensor_to_image(result)
    data = encode_image(image, fmt, alpha=decoded.alpha, options=options)
    return Rendered(data, media_type(fmt), image.width, image.height, inference_ms)


def stylize_decoded(
    view: BankSnapshot,
    decoded: DecodedImage,
    mix: StyleMix,
    *,
    strength: float = 1.0,
    preserve_color: bool = False,
    fmt: str = "png",
    style_scale: float = 1.0,
) -> Rendered:
    result, inference_ms = stylize_pixels(
        view, decoded, mix, strength=strength, preserve_color=preserve_color, style_scale=style_scale
    )
    return encode_result(result, decoded, fmt, inference_ms)


def stylize_pixels(
    view: BankSnapshot,
    decoded: Decoded,
    mix: StyleMix,
    *,
    strength: float = 1.0,
    preserve_color: bool = False,
    style_scale: float = 1.0,
) -> tuple[Pixels, float]:
    """The network stage of the fast path alone: decoded pixels -> stylized pixels (of the same kind), and the ms
    it took."""
    started = time.perf_counter()
    weights = mix.vector(list(view.names), view.device)
    result: Pixels
    if isinstance(decoded, DecodedTensor):
        result = stylize_pixels_tensor(view.runner, decoded.pixels, weights, strength, preserve_color, style_scale)
    else:
        result = stylize_image(view.runner, decoded.rgb, weights, strength, preserve_color, style_scale)
    _synchronize(view.device)
    return result, (time.perf_counter() - started) * 1000.0


def slow_stylize_decoded(
    content: DecodedImage,
    style: Image.Image,
    loss_network: Any,
    *,
    steps: int,
    time_limit_s: float,
    strength: float,
    preserve_color: bool,
    fmt: str,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    start_from: tuple[Runner, tuple[str, ...]] | None = None,
) -> tuple[Rendered, str | None]:
    """The slow path: Gram-matrix optimisation of the upload's pixels against ``style``.

    With ``start_from`` (a runner and its style names) the pixels start from that bank's
    nearest blend (returned as a style spec) instead of the photo."""
    from model.nearest import nearest_blend
    from model.slow import SlowConfig, slow_stylize

    device = next(loss_network.parameters()).device
    content_tensor = image_to_tensor(content.rgb).to(device)
    style_tensor = image_to_tensor(style).to(device)
    started = time.perf_counter()
    init, blend = None, None
    if start_from is not None:
        runner, names = start_from
        nearest = nearest_blend(runner, content_tensor, style_tensor, loss_network)
        init, blend = nearest.image, nearest.spec(names)
    config = SlowConfig(steps=steps, time_limit_s=time_limit_s)
    result = slow_stylize(
        content_tensor, style_tensor, loss_network, config, progress=progress, cancel=cancel, init=init
    )
    result = mix_with_original(result, content_tensor, strength, preserve_color)
    _synchronize(device)
    return encode_result(result, content, fmt, (time.perf_counter() - started) * 1000.0), blend


def synthesize_texture_image(
    style: Image.Image,
    loss_network: Any,
    *,
    width: int,
    height: int,
    layers: str,
    tileable: bool,
    seed: int,
    steps: int,
    time_limit_s: float,
    fmt: str,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> Rendered:
    """Texture synthesis: a ``width`` x ``height`` image with the painting's Gram matrices, from noise."""
    from model.slow import synthesize_texture, texture_config

    device = next(loss_network.parameters()).device
    config = texture_config(layers, steps=steps, time_limit_s=time_limit_s)
    started = time.perf_counter()
    result = synthesize_texture(
        image_to_tensor(style).to(device),
        (height, width),
        loss_network,
        config,
        tileable=tileable,
        seed=seed,
        progress=progress,
        cancel=cancel,
    )
    _synchronize(device)
    image = tensor_to_image(result)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    return Rendered(encode_image(image, fmt), media_type(fmt), image.width, image.height, elapsed_ms)


@dataclass(frozen=True)
class LearnedStyle:
    rows: dict[str, torch.Tensor]
    metadata: dict[str, Any]


def learn_new_style(
    bank: StyleBank,
    style: Image.Image,
    name: str,
    loss_network: Any,
    content: list[torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    image_size: int,
    source_sha256: str,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> LearnedStyle:
    """Fit one new gamma/beta row for ``style`` with every convolution frozen, with the bank's loss weights."""
    from training.add_style import (
        AddStyleConfig,
        bank_loss_weights,
        bank_resize_range,
        learn_style,
        learned_style_metadata,
    )

    device = next(loss_network.parameters()).device
    config = AddStyleConfig(
        steps=steps,
        batch_size=batch_size,
        image_size=image_size,
        resize_range=bank_resize_range(bank, image_size),
        loss_weights=bank_loss_weights(bank),
    )
    started = time.perf_counter()
    rows = learn_style(
        bank, image_to_tensor(style).to(device), name, loss_network, content, config, progress=progress, cancel=cancel
    )
    metadata = learned_style_metadata(
        source_sha256, config, learned_with="cinstyle service", learn_seconds=round(time.perf_counter() - started, 1)
    )
    return LearnedStyle(rows, metadata)


def load_content_images(content_dir, image_size: int) -> list[torch.Tensor]:
    """Photos to learn styles on: ``content_dir`` if set, else the training package's built-in set."""
    if content_dir is None:
        from training.add_style import default_content_images

        try:
            return default_content_images()
        except ImportError as exc:  # the built-in photos come from scikit-image
            raise CinstyleError(
                "learning a style needs content photos: set CINSTYLE_CONTENT_DIR to a folder of "
                f"photos, or install scikit-image for the built-in set ({exc})"
            ) from exc
    from training.data import list_content_images, load_images, photo_load_side

    return load_images(list_content_images(content_dir), max_side=photo_load_side(image_size))


def shrink(image: Image.Image, max_side: int) -> Image.Image:
    return downscale(image, max_side)
