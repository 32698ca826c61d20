"""Large outputs through the real server: tiled inference, style_scale, thin images, 413 before decoding."""

import pytest

from tests.app.service_helpers import decode, encode, error_of, photo


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank):
    # Small tiles so that a few-hundred-pixel upload already goes through in tiles.
    return server_factory(tiny_bank, "large", tile_side=256, tile_stats_side=128, max_pixels=2_000_000)


@pytest.mark.parametrize("backend_server", ["torch", "onnx"])
def test_tiled_result_has_the_upload_size(server_factory, tiny_bank, backend_server):
    server = server_factory(tiny_bank, f"tiled-{backend_server}", backend=backend_server, tile_side=256)
    response = server.client.post(
        "/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", encode(photo(701, 333)))}
    )
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (701, 333)


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0, 4.0])
def test_style_scale_keeps_the_size(server, scale):
    response = server.client.post(
        "/v1/stylize",
        params={"style": "beta", "style_scale": scale, "strength": 0.8, "preserve_color": True},
        files={"image": ("p.png", encode(photo(300, 200)))},
    )
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (300, 200)


@pytest.mark.parametrize("scale", ["0.1", "5", "nan", "big"])
def test_style_scale_out_of_range_is_422(server, scale):
    response = server.client.post(
        "/v1/stylize", params={"style": "beta", "style_scale": scale}, files={"image": ("p.png", encode(photo()))}
    )
    assert response.status_code == 422, response.text
    assert "style_scale" in error_of(response)["message"]


def test_style_scale_with_a_style_image_is_422(server):
    response = server.client.post(
        "/v1/stylize",
        params={"style_scale": 2},
        files={"image": ("p.png", encode(photo())), "style_image": ("s.png", encode(photo(seed=1)))},
    )
    assert response.status_code == 422 and "style_scale" in error_of(response)["message"]


@pytest.mark.parametrize("size", [(16, 4000), (20, 3000), (4000, 16), (17, 1500)])
@pytest.mark.parametrize("max_side", [None, 1000, 64])
def test_thin_images_get_a_result_or_a_4xx(server, size, max_side):
    params = {"style": "alpha"} | ({"max_side": max_side} if max_side else {})
    response = server.client.post("/v1/stylize", params=params, files={"image": ("p.png", encode(photo(*size)))})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 200:
        assert min(decode(response.content).size) >= 16
    else:
        assert error_of(response)["code"] == "invalid_image"
    if max_side is None:  # they fit the default output side, so they must work
        assert response.status_code == 200 and decode(response.content).size == size


def test_too_many_pixels_is_413_before_decoding(server):
    # A PNG header claiming 2000 x 1001 pixels (over max_pixels = 2,000,000) and nothing else:
    # it can only be refused from its header.
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 2000, 1001, 8, 2, 0, 0, 0))
    data = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")
    response = server.client.post("/v1/stylize", params={"style": "alpha"}, files={"image": ("p.png", data)})
    assert response.status_code == 413, response.text
    assert "2000x1001" in error_of(response)["message"]
