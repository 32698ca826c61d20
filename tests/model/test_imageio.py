import io
import struct
import zlib

import pytest
from PIL import Image

from model.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaTypeError
from model.imageio import decode_image, encode_image, image_to_tensor, tensor_to_image
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


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_encode_formats(fmt, pil_format):
    assert Image.open(io.BytesIO(encode_image(gradient_image(), fmt))).format == pil_format


def test_unsupported_output_format():
    with pytest.raises(UnsupportedMediaTypeError, match="use one of png, jpeg, webp"):
        encode_image(gradient_image(), "gif")
