"""Every decodable image gets a result or a 4xx: a generated corpus against one real server.

Thin, tiny, huge, broken and odd images go to the fast path (with several ``max_side``),
to the slow path (as the photo and as the painting) and to learning. Each case has one
expected answer: 200/202 with the right size, or exactly 400 (not an image we can use)
or 413 (too many pixels, refused before decoding), with the SPEC's JSON error body. A
bad image is refused by the request itself, never by a job that fails later; every job
that is accepted ends ``done``. Afterwards the server is alive and still serves.
"""

import io
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.app.service_helpers import Server, decode, encode, error_of, photo

MAX_UPLOAD = 1_000_000  # every file of the corpus fits under it (the 16 x 2,500,000 strip is ~10 KB)
SETTINGS = dict(
    backend="torch",  # learned styles are committed without an onnx re-export each time
    concurrency=1,
    max_waiting=64,
    max_upload_bytes=MAX_UPLOAD,
    queue_size=128,
    job_workers=1,
    slow_steps=1,
    slow_time_limit_s=30,
    learn_steps=1,
    learn_batch_size=1,
    learn_image_size=32,
)
# max_pixels stays at its default (40 Mpx): the 16 x 2,500,000 strip is exactly at it, so it is its
# shape that must refuse it (400), while the 50000 x 50000 header is over it (413).
MAX_OUTPUT_SIDE = 4096  # the server's default max_side
SLOW_MAX_SIDE = 512  # the slow path's photo and every painting are fitted to this (defaults)


# -- the corpus (generated; nothing is committed) --------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB but that carries no pixels (a decompression bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def multi_frame_gif() -> bytes:
    frames = [Image.new("RGB", (40, 24), colour).convert("P") for colour in ((200, 30, 30), (30, 200, 30), (0, 0, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def gray16_png() -> bytes:
    ramp = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
    return encode(Image.fromarray(ramp))


def palette_with_transparency() -> bytes:
    image = Image.new("P", (48, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (768 - 9))
    image.paste(0, (0, 0, 24, 32))  # the left half is index 0, transparent
    image.paste(2, (24, 0, 48, 16))
    return encode(image, transparency=0)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48 x 32, shown 32 x 48
    return encode(photo(48, 32), "JPEG", exif=exif.tobytes())


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


CORPUS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "thin_16x4000": ("thin.png", lambda: encode(photo(16, 4000))),
    "thin_20x3000": ("thin.png", lambda: encode(photo(20, 3000))),
    "thin_4000x16": ("wide.png", lambda: encode(photo(4000, 16))),
    "strip_16x2500000": ("strip.png", lambda: encode(Image.new("1", (16, 2_500_000)), optimize=True)),
    "empty": ("empty.png", lambda: b""),
    "truncated_png": ("cut.png", lambda: half(encode(photo(64, 64)))),
    "truncated_jpeg": ("cut.jpg", lambda: half(encode(photo(64, 64), "JPEG"))),
    "text_as_png": ("notes.png", lambda: b"this is a text file, not an image\n" * 20),
    "bomb_50000x50000": ("bomb.png", lambda: png_header_only(50_000, 50_000)),
    "tiny_15x15": ("tiny.png", lambda: encode(photo(15, 15))),
    "gif_3_frames": ("anim.gif", multi_frame_gif),
    "cmyk_jpeg": ("cmyk.jpg", lambda: encode(photo(48, 32, mode="CMYK"), "JPEG")),
    "gray16_png": ("gray16.png", gray16_png),
    "palette_transparency": ("palette.png", palette_with_transparency),
    "bilevel_1bit": ("bilevel.png", lambda: encode(photo(48, 32, mode="1"))),
    "exif_rotated_jpeg": ("rotated.jpg", exif_rotated_jpeg),
    "exact_16x16": ("small.png", lambda: encode(photo(16, 16))),
    "thin_fits_20x300": ("thin.png", lambda: encode(photo(20, 300))),
    "thin_at_limit_64x2048": ("thin.png", lambda: encode(photo(64, 2048))),
    "large_jpeg_1600x1200": ("large.jpg", lambda: encode(photo(1600, 1200), "JPEG", quality=85)),
}


class Corpus(dict):
    def __repr__(self) -> str:  # keeps pytest's failure reports free of megabytes of image bytes
        return f"<corpus of {len(self)} generated files>"


@pytest.fixture(scope="module")
def corpus() -> dict[str, tuple[str, bytes]]:
    files = Corpus({name: (filename, make()) for name, (filename, make) in CORPUS.items()})
    assert all(len(data) < MAX_UPLOAD for _, data in files.values())
    # each file is what its name says
    assert Image.open(io.BytesIO(files["strip_16x2500000"][1])).size == (16, 2_500_000)
    assert Image.open(io.BytesIO(files["gif_3_frames"][1])).n_frames == 3
    assert Image.open(io.BytesIO(files["cmyk_jpeg"][1])).mode == "CMYK"
    assert Image.open(io.BytesIO(files["gray16_png"][1])).mode == "I;16"
    palette = Image.open(io.BytesIO(files["palette_transparency"][1]))
    assert palette.mode == "P" and "transparency" in palette.info
    assert Image.open(io.BytesIO(files["bilevel_1bit"][1])).mode == "1"
    assert Image.open(io.BytesIO(files["exif_rotated_jpeg"][1])).getexif()[0x0112] == 6
    return files


@dataclass(frozen=True)
class Refused:
    status: int
    code: str
    says: tuple[str, ...]  # fragments the message must contain


def thin(size: str, max_side: int) -> Refused:
    return Refused(400, "invalid_image", (f"the image is {size}", f"max_side={max_side}", "at least 16 px"))


CORRUPT = ("corrupt or truncated",)
# Bad at any max_side (<= 512) and in every role; thin ones name the size and the max_side they were fitted to.
BAD: dict[str, Callable[[int], Refused]] = {
    "thin_16x4000": lambda side: thin("16x4000", side),
    "thin_20x3000": lambda side: thin("20x3000", side),
    "thin_4000x16": lambda side: thin("4000x16", side),
    "strip_16x2500000": lambda side: thin("16x2500000", side),
    "empty": lambda side: Refused(400, "invalid_image", ("empty",)),
    "truncated_png": lambda side: Refused(400, "invalid_image", CORRUPT),
    "truncated_jpeg": lambda side: Refused(400, "invalid_image", CORRUPT),
    "text_as_png": lambda side: Refused(400, "invalid_image", ("not an image format",)),
    "bomb_50000x50000": lambda side: Refused(413, "image_too_large", ("50000x50000", "limit is 40000000 pixels")),
    "tiny_15x15": lambda side: Refused(400, "invalid_image", ("15x15", "at least 16 px")),
}
# Good: the result's size (width, height) for a max_side (None: the server's default).
GOOD: dict[str, Callable[[int | None], tuple[int, int]]] = {
    "gif_3_frames": lambda side: (40, 24),
    "cmyk_jpeg": lambda side: (48, 32),
    "gray16_png": lambda side: (48, 32),
    "palette_transparency": lambda side: (48, 32),
    "bilevel_1bit": lambda side: (48, 32),
    "exif_rotated_jpeg": lambda side: (32, 48),
    "exact_16x16": lambda side: (16, 16),
    "thin_fits_20x300": lambda side: (20, 300),
    "thin_at_limit_64x2048": lambda side: {None: (64, 2048), 512: (16, 512)}[side],
    "large_jpeg_1600x1200": lambda side: {None: (1600, 1200), 512: (512, 384), 64: (64, 48)}[side],
}
# Thin images that are bad at a small max_side but fit the default (4096): a result, in tiles
# along their long side, whose thumbnail for the statistics is thinner than the network's padding.
FIT_AT_DEFAULT: dict[str, tuple[int, int]] = {
    "thin_16x4000": (16, 4000),
    "thin_20x3000": (20, 3000),
    "thin_4000x16": (4000, 16),
}
# (case, max_side) on the fast path; thin ones at several max_side, the rest at the default.
FAST_CASES = (
    [(name, None) for name in BAD]
    + [(name, side) for name in ("thin_16x4000", "thin_20x3000") for side in (16, 64, 512, 1024)]
    + [(name, None) for name in GOOD]
    + [("thin_at_limit_64x2048", 512), ("large_jpeg_1600x1200", 64), ("large_jpeg_1600x1200", 512)]
)


def assert_refused(response: httpx.Response, expected: Refused) -> None:
    assert response.status_code == expected.status, response.text
    error = error_of(response)
    assert error["code"] == expected.code, error
    for fragment in expected.says:
        assert fragment in error["message"], error


def file_part(corpus: dict[str, tuple[str, bytes]], case: str) -> tuple[str, bytes, str]:
    filename, data = corpus[case]
    return filename, data, "application/octet-stream"


@pytest.fixture(scope="module")
def content_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("content")
    photo(48, 48).save(folder / "photo.png")
    return folder


@pytest.fixture(scope="module")
def server(server_factory, tiny_bank, content_dir) -> Server:
    return server_factory(tiny_bank, "corpus", content_dir=content_dir, **SETTINGS)


@pytest.fixture(scope="module")
def accepted() -> dict[str, dict]:
    """Jobs accepted by the tests below (label -> the 202's JSON), checked at the end."""
    return {}


# -- the fast path ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, max_side", FAST_CASES, ids=[f"{c}-max_side={s}" for c, s in FAST_CASES])
def test_fast_path(server, corpus, case, max_side):
    params = {"style": "alpha"} | ({"max_side": max_side} if max_side is not None else {})
    response = server.client.post("/v1/stylize", params=params, files={"image": file_part(corpus, case)})
    if case in BAD and not (max_side is None and case in FIT_AT_DEFAULT):
        assert_refused(response, BAD[case](max_side or MAX_OUTPUT_SIDE))
        return
    assert response.status_code == 200, response.text
    result = decode(response.content)
    expected = FIT_AT_DEFAULT[case] if case in FIT_AT_DEFAULT else GOOD[case](max_side)
    assert result.format == "PNG" and result.size == expected
    if case == "palette_transparency":  # alpha kept: transparent on the left, opaque on the right
        assert result.mode == "RGBA"
        assert result.getchannel("A").getpixel((5, 5)) == 0 and result.getchannel("A").getpixel((40, 5)) == 255
    else:
        assert result.mode == "RGB"


# -- the slow path and learning: both images, refused by the request itself ------------------------------------------


def slow_post(server: Server, image: tuple, style_image: tuple, **params) -> httpx.Response:
    return server.client.post("/v1/stylize", params=params, files={"image": image, "style_image": style_image})


def learn_post(server: Server, name: str, style_image: tuple) -> httpx.Response:
    return server.client.post("/v1/styles", data={"name": name}, files={"style_image": style_image})


GOOD_PHOTO = ("photo.png", encode(photo(48, 32)), "image/png")
CANCELLED = {"large_jpeg_1600x1200"}  # its painting and learning jobs are cancelled once accepted (they cost seconds)


@pytest.mark.parametrize("case", list(BAD))
def test_slow_path_and_learning_refuse_bad_images_at_once(server, corpus, case):
    expected = BAD[case](SLOW_MAX_SIDE)
    assert_refused(slow_post(server, file_part(corpus, case), GOOD_PHOTO), expected)  # as the photo
    assert_refused(slow_post(server, GOOD_PHOTO, file_part(corpus, case)), expected)  # as the painting
    assert_refused(learn_post(server, f"bad_{case}", file_part(corpus, case)), expected)
    if case.startswith("thin_16x4000"):
        for side in (16, 64, 512):  # the photo's max_side does not rescue it either
            assert_refused(slow_post(server, file_part(corpus, case), GOOD_PHOTO, max_side=side), thin("16x4000", side))


def test_thin_photo_with_nearest_init(server, corpus, accepted):
    """Too thin once fitted: refused at once; thin but fitting: a job that ends done."""
    refused = slow_post(server, file_part(corpus, "thin_20x3000"), GOOD_PHOTO, init="nearest")
    assert_refused(refused, thin("20x3000", SLOW_MAX_SIDE))
    for case, side in (("thin_fits_20x300", None), ("thin_at_limit_64x2048", 512), ("exact_16x16", None)):
        params = {"init": "nearest"} | ({"max_side": side} if side else {})
        response = slow_post(server, file_part(corpus, case), GOOD_PHOTO, **params)
        assert response.status_code == 202, response.text
        accepted[f"nearest {case}"] = response.json() | {"expect_size": GOOD[case](side or SLOW_MAX_SIDE)}


@pytest.mark.parametrize("case", list(GOOD))
def test_slow_path_and_learning_accept_odd_images(server, corpus, case, accepted):
    # The large JPEG (decoded at a reduced DCT scale) as the photo at a small max_side: a full 512 px
    # slow job would cost seconds; as the painting it is fitted to 512 px, so those jobs are cancelled.
    side = 64 if case == "large_jpeg_1600x1200" else None
    as_photo = slow_post(server, file_part(corpus, case), GOOD_PHOTO, **({"max_side": side} if side else {}))
    assert as_photo.status_code == 202, as_photo.text
    accepted[f"slow photo {case}"] = as_photo.json() | {"expect_size": GOOD[case](side or SLOW_MAX_SIDE)}
    as_painting = slow_post(server, GOOD_PHOTO, file_part(corpus, case))
    assert as_painting.status_code == 202, as_painting.text
    learned = learn_post(server, f"odd_{case}", file_part(corpus, case))
    assert learned.status_code == 202, learned.text
    if case in CANCELLED:
        for job in (as_painting.json(), learned.json()):
            assert server.client.delete(job["url"]).status_code == 200
            accepted[f"cancelled {job['kind']} {case}"] = job
    else:
        accepted[f"slow painting {case}"] = as_painting.json() | {"expect_size": (48, 32)}
        accepted[f"learn {case}"] = learned.json()


def test_every_accepted_job_ends_done(server, accepted):
    assert accepted, "the tests above accept jobs"
    deadline = time.monotonic() + 120
    for label, job in accepted.items():
        while True:
            state = server.client.get(job["url"]).json()
            if state["status"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, f"{label}: still {state['status']}"
            time.sleep(0.05)
        # a cancelled job may have finished first (it is queued behind the others, so it rarely does)
        allowed = ("cancelled", "done") if label.startswith("cancelled") else ("done",)
        assert state["status"] in allowed, (label, state)
        if "expect_size" in job:
            result = server.client.get(state["result_url"])
            assert result.status_code == 200 and decode(result.content).size == job["expect_size"], label
    styles = {s["name"] for s in server.client.get("/v1/styles").json()["styles"]}
    assert {f"odd_{case}" for case in GOOD if case not in CANCELLED} <= styles
    assert not any(name.startswith("bad_") for name in styles)


# -- afterwards -----------------------------------------------------------------------------------------------------


def test_server_still_serves(server):
    assert server.process is not None and server.process.poll() is None
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").status_code == 200
    response = server.client.post(
        "/v1/stylize", params={"style": "beta"}, files={"image": ("photo.png", encode(photo(48, 32)), "image/png")}
    )
    assert response.status_code == 200 and decode(response.content).size == (48, 32)
    assert "Traceback" not in server.log()
