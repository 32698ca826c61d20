"""The web page at `/`, driven in a real headless Chromium (Debian's /usr/bin/chromium) by Playwright,
against a real server with the bundled bank.

Every test records the page's console and every request it makes: no console errors (beyond the
"Failed to load resource" line Chromium prints for an API error the test provokes on purpose) and no
request to any host but the server. Screenshots go to ``$CINSTYLE_TEST_ARTIFACTS/web`` (default
``test-artifacts/web`` in the repository).
"""

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

from model.bank import DEFAULT_BANK_DIR
from tests.app.service_helpers import REPO, Server, encode, photo, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("CINSTYLE_TEST_ARTIFACTS", REPO / "test-artifacts")) / "web"
API_KEY = "browser-test-key"
TWO_STYLES = ("van_gogh_starry_night", "hokusai_great_wave")

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]


def painting(width: int = 96, height: int = 72) -> Image.Image:
    """Bold diagonal stripes in three colours: a 'painting' whose Gram statistics are far from a photo's."""
    y, x = np.mgrid[0:height, 0:width]
    band = ((x + 2 * y) // 9) % 3
    colours = np.array([[220, 40, 30], [250, 200, 40], [30, 60, 160]], dtype=np.uint8)
    return Image.fromarray(colours[band], "RGB")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("uploads")
    paths = {
        "photo": folder / "photo.png",
        "painting": folder / "stripes.png",
        "text": folder / "notes.txt",
        "astronaut": folder / "astronaut.jpg",
    }
    paths["photo"].write_bytes(encode(photo(120, 80, seed=3)))
    paths["painting"].write_bytes(encode(painting()))
    paths["text"].write_text("these are notes, not a picture\n")
    from skimage import data  # a public-domain photo (NASA) for the screenshot in the README

    Image.fromarray(data.astronaut()).save(paths["astronaut"], quality=92)
    return paths


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory,
        DEFAULT_BANK_DIR,
        "web-server",
        slow_steps=30,
        slow_max_side=64,
        style_image_side=96,
        learn_steps=4,
        learn_batch_size=2,
        learn_image_size=32,
        api_key=API_KEY,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class PageWatch:
    """A page plus what it logged and requested."""

    def __init__(self, browser, base_url: str, width: int = 1280, height: int = 900) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.blocked: dict[str, str] = {}  # url -> why the browser never sent it
        self.page.on("console", lambda message: self.console.append((message.type, message.text)))
        self.page.on("pageerror", lambda error: self.console.append(("error", f"uncaught: {error}")))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("requestfailed", lambda request: self.blocked.__setitem__(request.url, request.failure or ""))

    def open(self, path: str = "/") -> "PageWatch":
        self.page.goto(self.base_url + path)
        return self

    def stylize_urls(self) -> list[str]:
        return [url for url in self.requests if urlsplit(url).path == "/v1/stylize"]

    def check_clean(self, expected_statuses: tuple[int, ...] = (), refused_by_csp: tuple[str, ...] = ()) -> None:
        """Only the server was asked; no console errors but the resource lines of the expected API errors.

        ``refused_by_csp``: foreign URLs a page tries and the server's Content-Security-Policy makes the
        browser refuse before sending (ReDoc's sidebar logo); they must fail with 'csp', never reach a network.
        """
        origin = urlsplit(self.base_url).netloc
        foreign = {url for url in self.requests if urlsplit(url).scheme in ("http", "https", "ws", "wss")}
        foreign = {url for url in foreign if urlsplit(url).netloc != origin}
        for url in refused_by_csp:
            if url in foreign:
                assert self.blocked.get(url) == "csp", (url, self.blocked.get(url))
                foreign.discard(url)
        assert not foreign, f"requests to other hosts: {sorted(foreign)}"
        allowed = [f"the server responded with a status of {status}" for status in expected_statuses]
        allowed += [
            f"Loading the image '{url}' violates the following Content Security Policy" for url in refused_by_csp
        ]
        errors = [text for kind, text in self.console if kind == "error" and not any(a in text for a in allowed)]
        assert not errors, f"console errors: {errors}"

    def screenshot(self, name: str, full_page: bool = True, jpeg_quality: int | None = None) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        if jpeg_quality is None:
            path = ARTIFACTS / f"{name}.png"
            self.page.screenshot(path=str(path), full_page=full_page)
        else:
            path = ARTIFACTS / f"{name}.jpg"
            self.page.screenshot(path=str(path), full_page=full_page, type="jpeg", quality=jpeg_quality)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watch(browser, server) -> Iterator[PageWatch]:
    watch = PageWatch(browser, server.url)
    yield watch
    watch.close()


def image_bytes_of(page, selector: str) -> bytes:
    """The bytes behind an <img> (a blob: URL made by the page), fetched inside the page."""
    values = page.evaluate(
        "async (sel) => Array.from(new Uint8Array(await (await fetch(document.querySelector(sel).src)).arrayBuffer()))",
        selector,
    )
    return bytes(values)


def as_array(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def wait_for_full_result(page, previous_src: str | None = None) -> str:
    """Waits until the result <img> shows a full-size result other than ``previous_src``; returns its src."""
    page.wait_for_function(
        "(old) => { const img = document.getElementById('result-image');"
        " return img.dataset.kind === 'full' && !img.hidden && img.src !== old && img.complete; }",
        arg=previous_src or "",
    )
    return page.get_attribute("#result-image", "src")


def choose_styles(page, *names: str) -> None:
    page.wait_for_selector(f'.style-card[data-style="{names[-1]}"]')
    for name in names:
        page.click(f'.style-card[data-style="{name}"]')
        assert page.get_attribute(f'.style-card[data-style="{name}"]', "aria-pressed") == "true"


# -- the tests ----------------------------------------------------------------------------------------------------


def test_gallery_shows_every_style_with_its_painting(watch, server):
    page = watch.open().page
    page.wait_for_selector(".style-card")
    expected = [s["name"] for s in server.client.get("/v1/styles").json()["styles"]]
    assert page.eval_on_selector_all(".style-card", "cards => cards.map(c => c.dataset.style)") == expected
    # every bundled style has its painting's thumbnail, loaded from the server
    page.wait_for_function(
        "n => Array.from(document.querySelectorAll('.style-card .pics img:first-child'))"
        ".filter(img => img.complete && img.naturalWidth > 0).length === n",
        arg=len(expected),
    )
    assert page.locator(".badge.builtin").count() == len(expected)
    assert "Ready: 22 styles" in page.text_content("#server-status")
    watch.check_clean()


def test_blend_of_two_styles_gives_a_result_and_strength_changes_it(watch, files):
    page = watch.open().page
    page.set_input_files("#photo-input", str(files["photo"]))
    assert page.is_visible("#photo-preview")  # shown at once
    choose_styles(page, *TWO_STYLES)
    page.fill(f"#weight-{TWO_STYLES[1]}", "0.4")
    first_src = wait_for_full_result(page)

    # the weights went to the API as name:w,...; the last request is the full-size one at the chosen size
    query = parse_qs(urlsplit(watch.stylize_urls()[-1]).query)
    assert query["style"] == [f"{TWO_STYLES[0]}:1,{TWO_STYLES[1]}:0.4"]
    assert query["max_side"] == ["1024"] and query["format"] == ["png"]
    # a low-resolution preview went first
    assert any(parse_qs(urlsplit(url).query)["max_side"] == ["256"] for url in watch.stylize_urls())

    original = as_array(files["photo"].read_bytes())
    full = as_array(image_bytes_of(page, "#result-image"))
    assert full.shape == original.shape  # 120 x 80, under the 1024 px output size: not resized
    strong_change = np.abs(full - original).mean()
    assert strong_change > 10, strong_change
    assert page.get_attribute("#download", "download").endswith(".png")
    assert page.is_visible("#download")

    # Move strength: a preview, then a new full result, closer to the photo.
    page.fill("#strength", "0.2")
    assert page.text_content("#strength-value") == "0.20"
    page.wait_for_function("() => document.getElementById('result-image').dataset.kind === 'preview'")
    second_src = wait_for_full_result(page, first_src)
    assert second_src != first_src
    weak = as_array(image_bytes_of(page, "#result-image"))
    assert np.abs(weak - original).mean() < 0.5 * strong_change
    assert parse_qs(urlsplit(watch.stylize_urls()[-1]).query)["strength"] == ["0.2"]
    watch.screenshot("blend-and-strength")
    watch.check_clean()


def test_a_text_file_shows_the_api_error_next_to_the_photo(watch, files):
    page = watch.open().page
    choose_styles(page, TWO_STYLES[0])
    page.set_input_files("#photo-input", str(files["text"]))
    page.wait_for_selector("#photo-error:not([hidden])")
    message = page.text_content("#photo-error")
    assert "not an image format we can decode" in message
    assert page.is_hidden("#result-image")
    watch.screenshot("text-file-error")
    # the page stays usable: a real photo next gives a result and clears the error
    page.set_input_files("#photo-input", str(files["photo"]))
    wait_for_full_result(page)
    assert page.is_hidden("#photo-error")
    watch.check_clean(expected_statuses=(400, 415))


def test_slow_path_job_shows_progress_and_its_result(watch, files):
    page = watch.open().page
    page.wait_for_selector(".style-card")
    page.set_input_files("#photo-input", str(files["photo"]))
    page.set_input_files("#slow-painting", str(files["painting"]))
    # record every progress value the bar shows while the job runs
    page.evaluate(
        "() => { window.seenProgress = []; const bar = document.getElementById('slow-progress');"
        " new MutationObserver(() => window.seenProgress.push(bar.value))"
        ".observe(bar, {attributes: true, attributeFilter: ['value']});"
        " const set = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value').set;"
        " Object.defineProperty(bar, 'value', {get() { return Number(this.getAttribute('value')); },"
        " set(v) { window.seenProgress.push(v); set.call(this, v); this.setAttribute('value', v); }}); }"
    )
    page.click("#slow-start")
    assert page.is_visible("#slow-cancel")
    page.wait_for_selector("#slow-result:not([hidden])", timeout=120_000)
    seen = page.evaluate("window.seenProgress")
    assert seen[-1] == 1 and max(seen) == 1
    assert page.text_content("#slow-progress-text") == "Done."
    result = Image.open(io.BytesIO(image_bytes_of(page, "#slow-result")))
    assert max(result.size) == 64 and result.size[0] > result.size[1]  # the slow path's size, landscape kept
    assert page.is_hidden("#slow-cancel") and page.is_enabled("#slow-start")
    watch.screenshot("slow-path-done")
    watch.check_clean()


def test_learning_a_painting_needs_the_key_and_adds_it_to_the_gallery(watch, files, server):
    page = watch.open().page
    page.wait_for_selector(".style-card")
    page.fill("#learn-name", "stripes")
    page.set_input_files("#learn-painting", str(files["painting"]))
    page.click("#learn-start")  # without the key: the server's 401 message, next to the form
    page.wait_for_selector("#learn-error:not([hidden])")
    assert "needs an API key" in page.text_content("#learn-error")
    assert page.evaluate("document.activeElement.id") == "api-key"

    page.fill("#api-key", API_KEY)
    page.press("#api-key", "Enter")  # the form submits from the keyboard
    card = page.wait_for_selector('.style-card[data-style="stripes"]', timeout=120_000)
    assert card.query_selector(".badge.learned") is not None
    assert "Learned" in page.text_content("#learn-progress-text")
    assert page.is_hidden("#learn-error")
    # the learned style keeps a thumbnail of its painting: the stripes, served by the server
    page.wait_for_function(
        "() => { const img = document.querySelector('.style-card[data-style=\"stripes\"] .pics img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    thumbnail = as_array(server.client.get("/v1/styles/stripes/painting").content)
    assert thumbnail.shape[:2] == (72, 96)
    stripes, other = as_array(encode(painting())), as_array(encode(photo(96, 72)))
    # a JPEG of the same picture: same mean colour, far nearer the stripes than another picture
    assert np.abs(thumbnail.mean(axis=(0, 1)) - stripes.mean(axis=(0, 1))).max() < 8
    assert np.abs(thumbnail - stripes).mean() < 0.5 * np.abs(thumbnail - other).mean()
    watch.screenshot("learned-style")
    watch.check_clean(expected_statuses=(401,))
    assert server.client.delete("/v1/styles/stripes", headers={"X-API-Key": API_KEY}).status_code == 204


def test_keyboard_alone_picks_a_style_and_phone_width_fits(browser, server, files):
    watch = PageWatch(browser, server.url, width=390, height=844)
    try:
        page = watch.open().page
        page.wait_for_selector(".style-card")
        page.set_input_files("#photo-input", str(files["photo"]))
        first = page.locator(".style-card").first
        first.focus()
        page.keyboard.press("Space")
        assert first.get_attribute("aria-pressed") == "true"
        wait_for_full_result(page)
        # nothing wider than the screen: no sideways scrolling on a phone
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # every form control has a label
        unlabelled = page.evaluate(
            "() => Array.from(document.querySelectorAll('input, select'))"
            ".filter(el => !el.labels.length && !el.getAttribute('aria-label')).map(el => el.id)"
        )
        assert unlabelled == []
        watch.screenshot("phone", full_page=False)
        watch.check_clean()
    finally:
        watch.close()


@pytest.mark.parametrize(("path", "ready"), [("/docs", ".opblock"), ("/redoc", "h1")])
def test_api_docs_render_offline(watch, path, ready):
    page = watch.open(path).page
    page.wait_for_selector(ready)
    assert "/v1/stylize" in page.text_content("body")  # the operations are listed
    scripts = page.eval_on_selector_all("script[src]", "els => els.map(e => e.src)")
    assert scripts and all(src.startswith(f"{watch.base_url}/docs-assets/") for src in scripts)
    watch.screenshot(f"docs{path.replace('/', '-')}")
    watch.check_clean(refused_by_csp=("https://cdn.redoc.ly/redoc/logo-mini.svg",))


def test_screenshot_for_the_readme(browser, server, files):
    """The README's picture (docs/images/web-page.jpg is a copy): the public-domain astronaut photo in a blend."""
    watch = PageWatch(browser, server.url, width=1280, height=1060)
    page = watch.open().page
    page.set_input_files("#photo-input", str(files["astronaut"]))
    choose_styles(page, "van_gogh_starry_night", "munch_the_scream")
    page.fill("#weight-munch_the_scream", "0.5")
    page.select_option("#max-side", "512")
    wait_for_full_result(page)
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('#gallery img.style-preview')).every(i => i.complete && i.src)"
    )
    assert page.evaluate("document.getElementById('result-image').naturalWidth") == 512
    watch.screenshot("web-page", full_page=False, jpeg_quality=82)
    watch.check_clean()
    watch.close()


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One job runs at a time, one may wait, and a slow-path job takes minutes: the queue can be filled."""
    server = start_server(
        tmp_path_factory,
        DEFAULT_BANK_DIR,
        "busy-server",
        slow_steps=100_000,
        slow_time_limit_s=600,
        slow_max_side=64,
        style_image_side=96,
        queue_size=1,
        job_workers=1,
    )
    yield server
    server.stop()


def test_a_full_queue_is_explained_the_page_stays_usable_and_a_job_can_be_cancelled(browser, busy_server, files):
    client = busy_server.client
    upload = {"image": files["photo"].read_bytes(), "style_image": files["painting"].read_bytes()}
    running = client.post("/v1/stylize", files=upload).json()
    waiting = client.post("/v1/stylize", files=upload).json()
    assert client.get(waiting["url"]).json()["status"] == "queued"

    watch = PageWatch(browser, busy_server.url)
    try:
        page = watch.open().page
        page.wait_for_selector(".style-card")
        page.set_input_files("#photo-input", str(files["photo"]))
        page.set_input_files("#slow-painting", str(files["painting"]))
        page.click("#slow-start")
        page.wait_for_selector("#slow-error:not([hidden])")
        message = page.text_content("#slow-error")
        assert "job queue is full" in message and re.search(r"try again in \d+ s", message), message
        assert page.is_enabled("#slow-start") and page.is_hidden("#slow-cancel")

        choose_styles(page, TWO_STYLES[0])  # the fast path still answers while the jobs wait
        wait_for_full_result(page)

        for job in (waiting, running):
            assert client.delete(job["url"]).status_code in (200, 202)
        page.click("#slow-start")  # room again: the job starts, and the page's Cancel stops it
        page.wait_for_selector("#slow-cancel:not([hidden])")
        page.wait_for_function("() => document.getElementById('slow-progress-text').textContent.includes('%')")
        page.click("#slow-cancel")
        page.wait_for_function("() => document.getElementById('slow-progress-text').textContent === 'Cancelled.'")
        assert page.is_hidden("#slow-result") and page.is_enabled("#slow-start")
        assert page.is_hidden("#slow-error")
        jobs = client.get("/readyz").json()["jobs"]
        assert jobs["cancelled"] == 3 and jobs["running"] == 0, jobs
        watch.screenshot("queue-full-then-cancel")
        watch.check_clean(expected_statuses=(429,))
    finally:
        watch.close()


def test_stroke_size_control_sends_style_scale_and_changes_the_result(watch, files):
    page = watch.open().page
    page.wait_for_selector("#style-scale-field:not([hidden])")  # the server's schema has style_scale
    page.set_input_files("#photo-input", str(files["astronaut"]))
    choose_styles(page, "van_gogh_starry_night")
    page.select_option("#max-side", "512")
    fine_src = wait_for_full_result(page)
    fine = as_array(image_bytes_of(page, "#result-image"))
    page.fill("#style-scale", "1")  # log2 scale: 2x larger strokes
    assert page.text_content("#style-scale-value") == "2.00×"
    wait_for_full_result(page, fine_src)
    bold = as_array(image_bytes_of(page, "#result-image"))
    assert parse_qs(urlsplit(watch.stylize_urls()[-1]).query)["style_scale"] == ["2"]
    assert bold.shape == fine.shape  # same output size, other strokes
    assert np.abs(bold - fine).mean() > 5
    watch.check_clean()


def test_texture_panel_makes_a_texture_and_shows_it_tiled(watch, files):
    page = watch.open().page
    page.wait_for_selector("#texture-panel:not([hidden])")  # the server's schema has POST /v1/textures
    # sizes up to the server's slow-path limit (64 px here)
    assert page.eval_on_selector_all("#texture-size option", "os => os.map(o => o.value)") == ["64"]
    page.set_input_files("#texture-painting", str(files["painting"]))
    page.select_option("#texture-layers", "relu3_1")
    page.check("#texture-tileable")
    page.click("#texture-start")
    page.wait_for_selector("#texture-result:not([hidden])", timeout=120_000)
    assert page.text_content("#texture-progress-text") == "Done."
    query = parse_qs(urlsplit(next(u for u in watch.requests if urlsplit(u).path == "/v1/textures")).query)
    assert query["layers"] == ["relu3_1"] and query["tileable"] == ["true"] and query["width"] == ["64"]
    texture = Image.open(
        io.BytesIO(
            bytes(
                page.evaluate(
                    "async () => Array.from(new Uint8Array(await (await fetch("
                    "document.getElementById('texture-result').dataset.url)).arrayBuffer()))"
                )
            )
        )
    )
    assert texture.size == (64, 64)
    pixels = np.asarray(texture.convert("RGB"), dtype=float)
    assert pixels.std() > 10  # a texture, not a flat colour
    assert page.get_attribute("#texture-download", "download") == "texture-relu3_1.png"
    watch.screenshot("texture")
    watch.check_clean()
