import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from model.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaTypeError
from model.imageio import (
    check_size,
    decode_image,
    downscale,
    encode_image,
    fitted_size,
    image_to_tensor,
    tensor_to_image,
)
from tests.conftest import gradient_image, to_bytes


def test_rgb_png_round_trip():
    image = gradient_image()
    decoded = decode_image(to_bytes(image))
    assert decoded.rgb.mode == "RGB" and decoded.alpha is None and decoded.source_format == "PNG"
    assert list(decoded.rgb.getdata()) == list(image.getdata())
    assert list(tensor_to_image(image_to_tensor(decoded.rgb)).getdata()) == list(image.getdata())


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "YCbCr"])
def test_modes_are_converted_to_rgb(mode):
    fmt = "JPEG" if mode in ("CMYK", "YCbCr") else "PNG"
    decoded = decode_image(to_bytes(gradient_image(mode=mode), fmt))
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == (48, 32)
    if mode == "L":
        r, g, b = decoded.rgb.getpixel((40, 20))
        assert r == g == b


def test_16_bit_grayscale_is_scaled_not_clipped():
    image = Image.new("I;16", (20, 20))
    image.putdata([i * 160 for i in range(400)])  # spans 0..63840
    decoded = decode_image(to_bytes(image))
    values = [p[0] for p in decoded.rgb.getdata()]
    assert decoded.rgb.mode == "RGB" and min(values) == 0 and max(values) >= 245


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept_aside_and_reattached(mode):
    image = gradient_image().convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    decoded = decode_image(to_bytes(image.convert(mode)))
    assert decoded.alpha is not None and decoded.alpha.size == image.size
    out = Image.open(io.BytesIO(encode_image(decoded.rgb, "png", alpha=decoded.alpha)))
    assert out.mode == "RGBA"
    assert list(out.getchannel("A").getdata()) == list(image.getchannel("A").getdata())
    # JPEG cannot carry alpha: it is dropped, not an error
    assert Image.open(io.BytesIO(encode_image(decoded.rgb, "jpeg", alpha=decoded.alpha))).mode == "RGB"


def test_palette_transparency_counts_as_alpha():
    image = Image.new("P", (20, 20), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 10, 20))
    image.info["transparency"] = 0
    decoded = decode_image(to_bytes(image, transparency=0))
    assert decoded.alpha is not None
    assert decoded.alpha.getpixel((15, 5)) == 0 and decoded.alpha.getpixel((5, 5)) == 255


def test_exif_orientation_is_applied():
    image = gradient_image(48, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    decoded = decode_image(to_bytes(image, "JPEG", exif=exif.tobytes()))
    assert decoded.rgb.size == (32, 48)


def test_downscale_to_max_side_keeps_aspect():
    decoded = decode_image(to_bytes(gradient_image(200, 100)), max_side=50)
    assert decoded.rgb.size == (50, 25)
    assert decode_image(to_bytes(gradient_image(40, 20)), max_side=50).rgb.size == (40, 20)  # never enlarges


def test_empty_and_garbage_bytes():
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidImageError, match="not an image format"):
        decode_image(b"hello, this is not an image at all")


def test_truncated_image_is_invalid():
    data = to_bytes(gradient_image(64, 64), "JPEG")
    with pytest.raises(InvalidImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size but carries almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLargeError, match="100000x100000"):
        decode_image(_png_header_only(100_000, 100_000), max_pixels=40_000_000)
    with pytest.raises(ImageTooLargeError, match="limit is 1000 pixels"):
        decode_image(to_bytes(gradient_image(48, 32)), max_pixels=1000)


def test_too_small_image_is_refused():
    with pytest.raises(InvalidImageError, match="at least 16 px"):
        decode_image(to_bytes(gradient_image(8, 40)))
    with pytest.raises(InvalidImageError, match="15x15; each side must be at least 16 px"):
        decode_image(_png_header_only(15, 15))  # from the header: no pixels to decode
    assert decode_image(to_bytes(gradient_image(16, 16)), max_side=16).rgb.size == (16, 16)


@pytest.mark.parametrize(
    "size, max_side, fitted",
    [
        ((64, 2048), 512, (16, 512)),  # exactly at the limit
        ((2048, 64), 512, (512, 16)),
        ((62, 2048), 512, (16, 512)),  # 15.5 rounds to 16, as downscale rounds it
        ((16, 4000), None, (16, 4000)),  # no max_side: only the 16 px minimum
        ((16, 16), 16, (16, 16)),
        ((300, 200), 1000, (300, 200)),  # never enlarged
    ],
)
def test_check_size_accepts_what_fits(size, max_side, fitted):
    assert check_size(size, max_side) == fitted == fitted_size(size, max_side)
    assert downscale(Image.new("RGB", size), max_side or 10**6).size == fitted


@pytest.mark.parametrize(
    "size, max_side, fitted",
    [
        ((16, 4000), 512, "2x512"),
        ((20, 3000), 64, "1x64"),
        ((4000, 16), 1024, "1024x4"),
        ((60, 2048), 512, "15x512"),
        ((16, 17), 16, "15x16"),
        ((16, 2_500_000), 1024, "1x1024"),
    ],
)
def test_check_size_refuses_a_side_under_16_px_after_fitting(size, max_side, fitted):
    with pytest.raises(InvalidImageError) as raised:
        check_size(size, max_side)
    message = str(raised.value)
    assert f"the image is {size[0]}x{size[1]}" in message and f"max_side={max_side}" in message
    assert f"it would be {fitted}" in message and "at least 16 px" in message
    assert f"at most about {max_side / 16:g}:1" in message  # what is allowed at this max_side


def test_thin_image_is_refused_from_its_header_before_decoding():
    # The header says 16 x 4000 and there are no pixels: a decode would fail as "corrupt"; the
    # size check answers first, for any max_side that leaves the shorter side under 16 px.
    for max_side in (16, 64, 512, 1024):
        with pytest.raises(InvalidImageError, match=f"16x4000: fitted to max_side={max_side}"):
            decode_image(_png_header_only(16, 4000), max_side=max_side)
    with pytest.raises(InvalidImageError, match="20x3000: fitted to max_side=512 it would be 3x512"):
        decode_image(to_bytes(gradient_image(20, 3000)), max_side=512)
    decoded = decode_image(to_bytes(gradient_image(64, 2048)), max_side=512)
    assert decoded.rgb.size == (16, 512)


def test_thin_check_holds_whichever_way_exif_turns_the_image():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored wide, shown tall
    with pytest.raises(InvalidImageError, match="4000x16: fitted to max_side=512"):
        decode_image(to_bytes(gradient_image(4000, 16), "JPEG", exif=exif.tobytes()), max_side=512)
    decoded = decode_image(to_bytes(gradient_image(2048, 64), "JPEG", exif=exif.tobytes()), max_side=512)
    assert decoded.rgb.size == (16, 512)


def _noisy_photo(width: int, height: int) -> Image.Image:
    noise = np.random.default_rng(0).integers(-25, 25, (height, width, 3))
    return Image.fromarray(
        (np.asarray(gradient_image(width, height), dtype=np.int16) + noise).clip(0, 255).astype(np.uint8)
    )


@pytest.fixture
def draft_scales(monkeypatch) -> list[int]:
    """The DCT scale each JPEG draft chose (1 = full size)."""
    scales: list[int] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        scales.append(self.decoderconfig[0] if result is not None else 1)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return scales


@pytest.fixture(scope="module")
def large_jpeg() -> bytes:
    return to_bytes(_noisy_photo(3001, 2001), "JPEG", quality=90)  # odd sizes: not a multiple of 2, 4 or 8


@pytest.mark.parametrize("max_side, scale", [(100, 8), (250, 4), (500, 2)])
def test_large_jpeg_is_decoded_at_a_reduced_scale_to_the_exact_size(draft_scales, large_jpeg, max_side, scale):
    decoded = decode_image(large_jpeg, max_side=max_side)
    assert draft_scales == [scale]
    reference = downscale(decode_image(large_jpeg).rgb, max_side)  # full decode, then LANCZOS
    assert decoded.rgb.size == reference.size == fitted_size((3001, 2001), max_side)
    difference = np.abs(np.asarray(decoded.rgb, dtype=np.float32) - np.asarray(reference, dtype=np.float32))
    assert difference.mean() < 1.0 and difference.max() <= 16


def test_jpeg_draft_is_skipped_when_the_target_is_not_much_smaller(draft_scales):
    data = to_bytes(_noisy_photo(1200, 800), "JPEG")
    assert decode_image(data, max_side=1000).rgb.size == (1000, 667)
    assert decode_image(data).rgb.size == (1200, 800)
    assert draft_scales == []


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_jpeg_draft_keeps_modes_and_exif_orientation(draft_scales, mode):
    exif = Image.Exif()
    exif[0x0112] = 6
    data = to_bytes(_noisy_photo(1600, 1000).convert(mode), "JPEG", exif=exif.tobytes())
    decoded = decode_image(data, max_side=100)
    assert draft_scales == [8]
    assert decoded.rgb.mode == "RGB" and decoded.rgb.size == (62, 100)  # 62.5 rounds to even, as downscale does
    reference = downscale(decode_image(data).rgb, 100)
    difference = np.abs(np.asarray(decoded.rgb, dtype=np.float32) - np.asarray(reference, dtype=np.float32))
    assert difference.mean() < 1.5


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_encode_formats(fmt, pil_format):
    assert Image.open(io.BytesIO(encode_image(gradient_image(), fmt))).format == pil_format


def test_unsupported_output_format():
    with pytest.raises(UnsupportedMediaTypeError, match="use one of png, jpeg, webp"):
        encode_image(gradient_image(), "gif")
