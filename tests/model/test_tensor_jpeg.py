"""JPEG as tensors (TorchCodec), tested on the CPU, where its libjpeg-turbo must give exactly Pillow's pixels
and bytes: orientation, grayscale, subsampling and progressive files as `decode_image` gives them, the same
refusals before decoding, and Pillow left to decode everything else."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from model.errors import ImageTooLargeError, InvalidImageError
from model.imageio import decode_image, encode_image
from model.runner import TorchRunner
from model.stylize import stylize_image, stylize_pixels_tensor
from model.tensor_jpeg import decode_jpeg_tensor, encode_jpeg_tensor, unavailable_reason
from model.tiling import TilingRunner
from tests.conftest import make_tiny_network

CPU = torch.device("cpu")


def noisy_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    generator = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    pixels = smooth + generator.normal(0, 12, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def jpeg(image: Image.Image, orientation: int | None = None, **options: object) -> bytes:
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def as_array(decoded) -> np.ndarray:
    return decoded.pixels.permute(1, 2, 0).numpy()


def test_the_codecs_work_on_this_cpu():
    assert unavailable_reason(CPU) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_turned_upright_exactly_as_pillow_does(orientation):
    data = jpeg(noisy_photo(64, 40), orientation)
    tensor, pillow = decode_jpeg_tensor(data, CPU), decode_image(data)
    assert tensor is not None and tensor.pixels.dtype == torch.uint8
    assert tensor.size == pillow.rgb.size == ((64, 40) if orientation <= 4 else (40, 64))
    assert np.array_equal(as_array(tensor), np.asarray(pillow.rgb))


@pytest.mark.parametrize(
    "options",
    [{"quality": 92}, {"quality": 92, "subsampling": 0}, {"quality": 75, "progressive": True}],
    ids=["420", "444", "progressive"],
)
def test_colour_jpegs_decode_to_pillows_pixels(options):
    data = jpeg(noisy_photo(96, 72, seed=1), **options)
    assert np.array_equal(as_array(decode_jpeg_tensor(data, CPU)), np.asarray(decode_image(data).rgb))


def test_a_grayscale_jpeg_becomes_rgb_as_with_pillow():
    data = jpeg(noisy_photo(80, 48).convert("L"))
    tensor = decode_jpeg_tensor(data, CPU)
    assert tensor.pixels.shape == (3, 48, 80)
    assert np.array_equal(as_array(tensor), np.asarray(decode_image(data).rgb))


def test_a_large_jpeg_is_fitted_to_max_side_close_to_pillows_lanczos():
    data = jpeg(noisy_photo(640, 400, seed=2), orientation=6, quality=95)
    tensor, pillow = decode_jpeg_tensor(data, CPU, max_side=200), decode_image(data, max_side=200)
    assert tensor.size == pillow.rgb.size == (125, 200)  # turned upright, then fitted
    difference = as_array(tensor).astype(float) - np.asarray(pillow.rgb, dtype=float)
    psnr = 10 * np.log10(255**2 / np.mean(difference**2))
    assert psnr > 35, psnr  # antialiased bicubic against Lanczos (+ a reduced-DCT draft): the same picture


@pytest.mark.parametrize(
    "make",
    [
        lambda: _encoded(noisy_photo(40, 30), "PNG"),
        lambda: _encoded(noisy_photo(40, 30), "WEBP"),
        lambda: _encoded(noisy_photo(40, 30).convert("CMYK"), "JPEG"),
        lambda: jpeg(noisy_photo(40, 30), orientation=9),  # not an orientation: Pillow's reading stays the one
    ],
    ids=["png", "webp", "cmyk-jpeg", "bad-orientation"],
)
def test_what_it_does_not_take_is_left_to_pillow(make):
    data = make()
    assert decode_jpeg_tensor(data, CPU) is None
    assert decode_image(data).rgb.size == (40, 30)


def test_a_truncated_jpeg_is_left_to_pillow_which_says_what_is_wrong():
    data = jpeg(noisy_photo(320, 240, seed=3))
    cut = data[: len(data) // 2]
    assert decode_jpeg_tensor(cut, CPU) is None
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(cut)


def test_too_many_pixels_and_too_thin_are_refused_before_decoding_as_with_pillow():
    data = jpeg(noisy_photo(200, 100))
    for decode in (decode_image, lambda d, **kw: decode_jpeg_tensor(d, CPU, **kw)):
        with pytest.raises(ImageTooLargeError, match="200x100 = 20000 pixels; the limit is 10000"):
            decode(data, max_pixels=10_000)
        with pytest.raises(InvalidImageError, match="each side must be at least 16"):
            decode(jpeg(noisy_photo(400, 16)), max_side=200)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("quality", [92, 40])
def test_encoding_gives_pillows_bytes_at_the_same_quality(quality):
    image = noisy_photo(72, 56, seed=4)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    assert encode_jpeg_tensor(pixels, quality) == encode_image(image, "jpeg", quality=quality)


@pytest.mark.parametrize(
    ("strength", "preserve_color", "style_scale", "tile_side"),
    [
        (1.0, False, 1.0, 1152),
        (0.6, True, 1.0, 1152),
        (1.0, False, 1.0, 112),
        (1.0, False, 2.0, 1152),
        (1.0, False, 0.5, 1152),
    ],
    ids=["plain", "mixed", "tiled", "larger-strokes", "smaller-strokes"],
)
def test_pixels_on_the_device_stylize_as_stylize_image_does(strength, preserve_color, style_scale, tile_side):
    network = make_tiny_network(seed=3)
    runner = TilingRunner(TorchRunner(network), tile_side=tile_side, margin=8)
    image = noisy_photo(150, 104, seed=5)
    weights = torch.tensor([[0.3, 0.7, 0.0]])
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    tensor = stylize_pixels_tensor(runner, pixels, weights, strength, preserve_color, style_scale)
    pillow = np.asarray(stylize_image(runner, image, weights, strength, preserve_color, style_scale), dtype=int)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 104, 150)
    difference = np.abs(tensor.permute(1, 2, 0).numpy().astype(int) - pillow)
    if style_scale == 1.0:  # the same network on the same pixels: float rounding at most
        assert difference.max() <= 1
    else:  # resized on the device (bicubic) instead of by Pillow (Lanczos / bicubic): the same picture
        psnr = 10 * np.log10(255**2 / np.mean(difference.astype(float) ** 2))
        unscaled = np.asarray(stylize_image(runner, image, weights, strength, preserve_color), dtype=int)
        assert psnr > 35, psnr  # 37.8 and 43.5 dB here, on a noisy picture
        assert difference.mean() < np.abs(pillow - unscaled).mean() / 5  # far closer than another stroke size
    assert np.abs(pillow - np.asarray(image, dtype=int)).mean() > 5  # it did stylize


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m gpu where one is)")
def test_on_cuda_nvjpeg_agrees_with_libjpeg_within_a_few_levels():
    cuda = torch.device("cuda")
    assert unavailable_reason(cuda) is None
    data = jpeg(noisy_photo(320, 200, seed=6), orientation=6, quality=92)
    on_gpu, on_cpu = decode_jpeg_tensor(data, cuda, max_side=160), decode_jpeg_tensor(data, CPU, max_side=160)
    assert on_gpu.pixels.device.type == "cuda" and on_gpu.size == on_cpu.size == (100, 160)
    assert (on_gpu.pixels.cpu().int() - on_cpu.pixels.int()).abs().float().mean() < 1.0
    encoded = encode_jpeg_tensor(on_gpu.pixels, 92)
    again = np.asarray(decode_image(encoded).rgb, dtype=int)
    assert np.abs(again - on_cpu.pixels.permute(1, 2, 0).numpy().astype(int)).mean() < 3.0
