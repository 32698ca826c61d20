"""The fast path's codecs and batching through a real server: result encoding settings, and same-size
requests batched into one network call with each answer exactly its own (on the CPU, batching on by setting)."""

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.app.service_helpers import STYLE_NAMES, decode, encode, photo


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
