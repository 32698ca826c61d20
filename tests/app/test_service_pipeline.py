"""The fast path's codecs and batching through a real server: result encoding settings, and same-size
requests batched into one network call with each answer exactly its own (on the CPU, batching on by setting)."""

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.app.service_helpers import STYLE_NAMES, decode, encode, error_of, photo


def stylize(server, data: bytes, style: str, fmt: str = "png"):
    response = server.client.post("/v1/stylize", params={"style": style, "format": fmt}, files={"image": data})
    assert response.status_code == 200, response.text
    return response


@pytest.mark.slow
def test_encoding_settings_set_png_level_and_jpeg_webp_quality(server_factory, tiny_bank):
    data = encode(photo(160, 120, seed=5))
    default = server_factory(tiny_bank, "codec-default")
    tuned = server_factory(tiny_bank, "codec-tuned", png_compress_level=9, jpeg_quality=30, webp_quality=30)
    for fmt in ("png", "jpeg", "webp"):
        plain, small = stylize(default, data, "alpha", fmt), stylize(tuned, data, "alpha", fmt)
        if fmt == "png":  # lossless either way: same pixels, and level 9 packs them tighter than level 1
            assert np.array_equal(np.asarray(decode(plain.content)), np.asarray(decode(small.content)))
        assert len(small.content) < len(plain.content), fmt
        assert decode(small.content).size == (160, 120)


@pytest.mark.slow
def test_batched_requests_each_get_their_own_result(server_factory, tiny_bank):
    server = server_factory(tiny_bank, "batching", batch_max=4, concurrency=4, batch_wait_ms=300, backend="torch")
    images = [encode(photo(96, 64, seed=seed)) for seed in range(4)]
    styles = [STYLE_NAMES[0], STYLE_NAMES[1], f"{STYLE_NAMES[0]}:1,{STYLE_NAMES[2]}:1", STYLE_NAMES[2]]
    alone = [np.asarray(decode(stylize(server, d, s).content), dtype=int) for d, s in zip(images, styles, strict=True)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda pair: stylize(server, *pair), zip(images, styles, strict=True)))
    for single, response in zip(alone, together, strict=True):
        assert np.abs(np.asarray(decode(response.content), dtype=int) - single).max() <= 1
    assert np.abs(alone[0] - alone[1]).mean() > 2  # the comparison can tell styles apart
    metrics = server.client.get("/metrics").text
    batched = sum(
        float(count)
        for bucket, count in re.findall(
            r'cinstyle_inference_batch_size_bucket\{le="([0-9.+Inf]+)"\} ([0-9.]+)', metrics
        )
        if bucket == "+Inf"
    ) - float(re.search(r'cinstyle_inference_batch_size_bucket\{le="1.0"\} ([0-9.]+)', metrics).group(1))
    assert batched >= 1, metrics  # at least one network call held more than one image


def jpeg_with_orientation(image, orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=92, exif=exif.tobytes())


@pytest.mark.slow
def test_torchcodec_jpeg_path_serves_what_the_pillow_path_serves(server_factory, tiny_bank):
    """CINSTYLE_JPEG_CODEC=torchcodec (the GPU default), run on the CPU: a JPEG upload is decoded, stylized and
    encoded as tensors, and the answer is Pillow's; everything else still goes through Pillow, unchanged."""
    pillow = server_factory(tiny_bank, "jpeg-pillow", backend="torch")
    tensors = server_factory(tiny_bank, "jpeg-torchcodec", backend="torch", jpeg_codec="torchcodec")
    assert pillow.client.get("/readyz").json()["jpeg_codec"] == "pillow"
    assert tensors.client.get("/readyz").json()["jpeg_codec"] == "torchcodec"

    portrait = jpeg_with_orientation(photo(120, 88, seed=7), 6)  # stored landscape, shown portrait
    for fmt in ("jpeg", "png"):
        expected, got = stylize(pillow, portrait, "alpha", fmt), stylize(tensors, portrait, "alpha", fmt)
        assert got.headers["content-type"] == expected.headers["content-type"]
        want, have = np.asarray(decode(expected.content), dtype=int), np.asarray(decode(got.content), dtype=int)
        assert have.shape == want.shape == (120, 88, 3)
        assert np.abs(have - want).max() <= 2, fmt  # float rounding, then (for jpeg) the same encoder
        assert np.abs(have - np.asarray(decode(portrait).rotate(-90, expand=True), dtype=int)).mean() > 5
    # Large uploads are fitted to max_side on the device: the same size as Pillow's, nearly the same pixels.
    large = encode(photo(600, 400, seed=8), "JPEG", quality=95)
    fitted = [stylize_at(server, large, "alpha", max_side=150) for server in (pillow, tensors)]
    assert fitted[0].shape == fitted[1].shape == (100, 150, 3)
    other_style = stylize_at(pillow, large, STYLE_NAMES[1], max_side=150)
    assert np.abs(fitted[0] - fitted[1]).mean() < np.abs(fitted[0] - other_style).mean() / 3

    alpha_png = encode(photo(64, 48, mode="RGBA", seed=9), "PNG")
    cmyk_jpeg = encode(photo(64, 48, mode="CMYK", seed=10), "JPEG")
    for data in (alpha_png, cmyk_jpeg):  # left to Pillow: byte for byte the same answer
        assert stylize(tensors, data, "alpha").content == stylize(pillow, data, "alpha").content
    assert decode(stylize(tensors, alpha_png, "alpha").content).mode == "RGBA"

    truncated = encode(photo(200, 150, seed=11), "JPEG")[:2000]
    answers = [
        server.client.post("/v1/stylize", params={"style": "alpha"}, files={"image": truncated})
        for server in (pillow, tensors)
    ]
    assert answers[0].status_code == answers[1].status_code == 400
    assert error_of(answers[0]) == error_of(answers[1])


def stylize_at(server, data: bytes, style: str, max_side: int) -> np.ndarray:
    response = server.client.post("/v1/stylize", params={"style": style, "max_side": max_side}, files={"image": data})
    assert response.status_code == 200, response.text
    return np.asarray(decode(response.content), dtype=int)
