"""The fast path against a real server: styles, blends, formats, inputs, every error, concurrency, metrics."""

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from tests.app.service_helpers import STYLE_NAMES, Server, decode, encode, error_of, photo

MAX_UPLOAD = 300_000
MAX_PIXELS = 1_000_000
MAX_SIDE = 64


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank) -> Server:
    return server_factory(
        tiny_bank,
        "api",
        concurrency=1,
        max_waiting=64,
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
        max_output_side=MAX_SIDE,
    )


@pytest.fixture(scope="module")
def client(server) -> httpx.Client:
    return server.client


def post(client: httpx.Client, data: bytes, filename: str = "photo.png", **params) -> httpx.Response:
    return client.post("/v1/stylize", params=params, files={"image": (filename, data, "application/octet-stream")})


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


# -- health, styles, docs ---------------------------------------------------------------------------------------------


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["device"] == "cpu" and ready.json()["styles"] == 3 and ready.json()["concurrency"] == 1


def test_styles_list_names_kinds_and_preview_urls(client):
    styles = client.get("/v1/styles").json()["styles"]
    assert [s["name"] for s in styles] == list(STYLE_NAMES)
    assert {s["kind"] for s in styles} == {"builtin"}
    assert styles[0]["preview_url"] == "/v1/styles/alpha/preview"


def test_preview_is_a_cached_png(client):
    first = client.get("/v1/styles/beta/preview")
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert decode(first.content).format == "PNG" and max(decode(first.content).size) <= 256
    assert client.get("/v1/styles/beta/preview").content == first.content
    assert client.get("/v1/styles/alpha/preview").content != first.content
    missing = client.get("/v1/styles/nope/preview")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"


def test_docs_and_openapi(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/healthz",
        "/readyz",
        "/v1/styles",
        "/v1/styles/{name}/preview",
        "/v1/stylize",
        "/v1/styles/{name}",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/metrics",
    ):
        assert path in paths


# -- the fast path --------------------------------------------------------------------------------------------------


def test_single_style_returns_image_and_headers(client):
    response = post(client, encode(photo(48, 32)), style="alpha")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-style-weights"] == "alpha:1"
    assert float(response.headers["x-inference-ms"]) >= 0
    image = decode(response.content)
    assert image.size == (48, 32) and image.mode == "RGB"


def test_blend_keeps_order_and_normalizes(client):
    data = encode(photo(48, 32))
    blend = post(client, data, style="gamma:3,alpha:1")
    assert blend.status_code == 200
    assert blend.headers["x-style-weights"] == "gamma:0.75,alpha:0.25"
    three = post(client, data, style="beta:1,alpha:1,gamma:2")
    assert three.headers["x-style-weights"] == "beta:0.25,alpha:0.25,gamma:0.5"
    singles = {post(client, data, style=name).content for name in ("alpha", "gamma")}
    assert blend.content not in singles and len(singles) == 2
    assert post(client, data, style="gamma:1,alpha:0").content == post(client, data, style="gamma").content


@pytest.mark.parametrize(
    ("params", "headers", "media", "pil_format"),
    [
        ({"format": "jpeg"}, {}, "image/jpeg", "JPEG"),
        ({"format": "jpg"}, {}, "image/jpeg", "JPEG"),
        ({"format": "webp"}, {}, "image/webp", "WEBP"),
        ({}, {"accept": "image/webp"}, "image/webp", "WEBP"),
        ({}, {"accept": "image/png;q=0.5, image/jpeg"}, "image/jpeg", "JPEG"),
        ({}, {"accept": "text/html,*/*;q=0.8"}, "image/png", "PNG"),
        ({"format": "png"}, {"accept": "image/jpeg"}, "image/png", "PNG"),
    ],
)
def test_output_format_from_query_or_accept(client, params, headers, media, pil_format):
    response = client.post(
        "/v1/stylize", params={"style": "beta", **params}, headers=headers, files={"image": ("p.png", encode(photo()))}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == media
    assert decode(response.content).format == pil_format


def test_downscales_to_max_side(client):
    assert decode(post(client, encode(photo(60, 40)), style="alpha", max_side=30).content).size == (30, 20)
    assert decode(post(client, encode(photo(128, 64)), style="alpha").content).size == (MAX_SIDE, 32)


def test_strength_and_preserve_color(client):
    source = photo(48, 32)
    data = encode(source)
    zero = decode(post(client, data, style="alpha", strength=0).content)
    assert max(abs(a - b) for a, b in zip(zero.tobytes(), source.tobytes(), strict=True)) <= 1
    full = post(client, data, style="alpha").content
    half = post(client, data, style="alpha", strength=0.5).content
    kept = post(client, data, style="alpha", preserve_color="true").content
    assert len({full, half, kept}) == 3


def test_alpha_channel_round_trips(client):
    rgba = photo(40, 40).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((40, 40))
    rgba.putalpha(alpha)
    out = decode(post(client, encode(rgba), style="gamma").content)
    assert out.mode == "RGBA" and out.size == (40, 40)
    assert out.getchannel("A").tobytes() == alpha.tobytes()
    jpeg = decode(post(client, encode(rgba), style="gamma", format="jpeg").content)
    assert jpeg.mode == "RGB"


def test_exif_orientation_is_applied(client):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(photo(48, 32), "JPEG", exif=exif.tobytes())
    assert decode(data).size == (48, 32)
    out = decode(post(client, data, "p.jpg", style="alpha").content)
    assert out.size == (32, 48)


@pytest.mark.parametrize(
    "image",
    [
        photo(40, 30, "L"),
        photo(40, 30, "P"),
        photo(40, 30, "CMYK"),
        photo(40, 30, "LA"),
        photo(40, 30, "L").point(lambda v: v * 256, "I").convert("I;16"),
    ],
)
def test_other_modes_are_converted(client, image):
    fmt = "JPEG" if image.mode == "CMYK" else ("TIFF" if image.mode == "I;16" else "PNG")
    response = post(client, encode(image, fmt), style="beta")
    assert response.status_code == 200, response.text
    assert decode(response.content).size == (40, 30)


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "params", "status", "code"),
    [
        (b"definitely not an image", {"style": "alpha"}, 400, "invalid_image"),
        (b"", {"style": "alpha"}, 400, "invalid_image"),
        (encode(photo(48, 32))[:200], {"style": "alpha"}, 400, "invalid_image"),
        (encode(photo(8, 8)), {"style": "alpha"}, 400, "invalid_image"),
        (encode(photo()), {"style": "monet"}, 422, "unknown_style"),
        (encode(photo()), {"style": "alpha:-1"}, 422, "invalid_style_weights"),
        (encode(photo()), {"style": "alpha:0,beta:0"}, 422, "invalid_style_weights"),
        (encode(photo()), {"style": "alpha:x"}, 422, "invalid_style_weights"),
        (encode(photo()), {"style": "alpha:nan"}, 422, "invalid_style_weights"),
        (encode(photo()), {"style": "alpha,alpha"}, 422, "invalid_style_weights"),
        (encode(photo()), {"style": ""}, 422, "invalid_style_weights"),
        (encode(photo()), {}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "strength": 1.5}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "strength": -0.1}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "strength": "abc"}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "max_side": 4096}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "max_side": 4}, 422, "invalid_parameter"),
        (encode(photo()), {"style": "alpha", "format": "bmp"}, 415, "unsupported_media_type"),
    ],
)
def test_bad_requests_get_json_errors(client, data, params, status, code):
    response = post(client, data, **params)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


def test_error_messages_teach(client):
    unknown = error_of(post(client, encode(photo()), style="monet"))["message"]
    assert "monet" in unknown and "alpha" in unknown
    strength = error_of(post(client, encode(photo()), style="alpha", strength=2))["message"]
    assert "between 0 and 1" in strength and "2" in strength


def test_missing_image_and_wrong_content_type(client):
    no_image = client.post("/v1/stylize", params={"style": "alpha"}, files={"other": ("x", b"x")})
    assert no_image.status_code == 422 and "image" in error_of(no_image)["message"]
    raw = client.post(
        "/v1/stylize", params={"style": "alpha"}, content=encode(photo()), headers={"content-type": "image/png"}
    )
    assert raw.status_code == 415 and error_of(raw)["code"] == "unsupported_media_type"
    not_acceptable = client.post(
        "/v1/stylize",
        params={"style": "alpha"},
        headers={"accept": "application/json"},
        files={"image": ("p.png", encode(photo()))},
    )
    assert not_acceptable.status_code == 406 and error_of(not_acceptable)["code"] == "not_acceptable"


def test_too_many_bytes_is_413_early_and_while_streaming(client):
    big = b"\0" * (MAX_UPLOAD + 10_000)
    declared = post(client, big, style="alpha")
    assert declared.status_code == 413 and error_of(declared)["code"] == "payload_too_large"

    def chunks():  # a well-formed multipart start, then too much file; no Content-Length: counted as it arrives
        yield b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 10_000

    streamed = client.post(
        "/v1/stylize",
        params={"style": "alpha"},
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "payload_too_large"
    assert client.get("/healthz").status_code == 200
    garbage = client.post(
        "/v1/stylize",
        params={"style": "alpha"},
        content=b"--nope",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert garbage.status_code == 400 and error_of(garbage)["code"] == "bad_request"


def test_pixel_bomb_is_refused_before_decoding(client):
    bomb = encode(Image.new("L", (4000, 4000)), optimize=True)  # 16 Mpx in a few KB
    assert len(bomb) < MAX_UPLOAD
    response = post(client, bomb, style="alpha")
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "image_too_large" and str(MAX_PIXELS) in error["message"]


def test_unknown_route_and_method_are_json(client):
    missing = client.get("/v1/nothing")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    wrong = client.put("/v1/stylize")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


# -- concurrency and metrics -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_requests_all_succeed_within_the_limit(client):
    before = client.get("/metrics").text
    data = [encode(photo(64, 48, seed=i)) for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda d: post(client, d, style="alpha:1,beta:1"), data))
    assert [r.status_code for r in responses] == [200] * 20
    assert all(decode(r.content).size == (64, 48) for r in responses)
    after = client.get("/metrics").text
    assert metric(after, "cinstyle_inference_in_flight_peak") == 1  # concurrency=1: never more at once
    assert metric(after, "cinstyle_inference_concurrency_limit") == 1
    assert metric(after, "cinstyle_inference_in_flight") == 0 and metric(after, "cinstyle_inference_waiting") == 0
    counted = metric(after, "cinstyle_http_requests_total", route="/v1/stylize", status="200") - metric(
        before, "cinstyle_http_requests_total", route="/v1/stylize", status="200"
    )
    assert counted == 20
    timed = metric(after, "cinstyle_inference_seconds_count", kind="fast") - metric(
        before, "cinstyle_inference_seconds_count", kind="fast"
    )
    assert timed == 20


def test_metrics_use_route_templates(client):
    client.get("/v1/styles/gamma/preview")
    text = client.get("/metrics").text
    assert 'route="/v1/styles/{name}/preview"' in text
    assert 'route="/v1/styles/gamma/preview"' not in text
    assert "cinstyle_http_request_duration_seconds_bucket" in text
    assert metric(text, "cinstyle_styles", kind="builtin") == 3
