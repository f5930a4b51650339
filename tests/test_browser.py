"""End to end in Debian's headless Chromium (Playwright): drop an image, crop it, choose the model and k,
search, see the results, open one; and the page's error messages. Screenshots go to test-artifacts/.

Chromium comes from ``scripts/install_chromium.sh`` (Debian's package); the test fails, never skips,
when it is missing.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect
from support.live_server import free_port, serving
from support.query_data import Photo, fill_store, tiny_model, write_photos

from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.web.app import create_app
from gemsearch.plugin.web.config import Limits, LocalStoreSpec, ModelSpec, OpenSearchStoreSpec, ServeConfig

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Photo], Path]]:
    root = tmp_path_factory.mktemp("browser")
    photos = write_photos(root / "photos", max_side=320)
    models = []
    for name, seed in (("tiny", 1), ("tiny-b", 5)):
        tiny_model(root / f"{name}.onnx", name=name, seed=seed)
        with LocalStore(root / name) as store:
            fill_store(store, OnnxEmbedder(root / f"{name}.onnx"), photos)
        models.append(ModelSpec(path=root / f"{name}.onnx", store=LocalStoreSpec(path=root / name)))
    down = OpenSearchStoreSpec(prefix="down", urls=(f"http://127.0.0.1:{free_port()}",))
    tiny_model(root / "down.onnx", name="down", seed=9)
    models.append(ModelSpec(path=root / "down.onnx", store=down))
    config = ServeConfig(
        models=tuple(models),
        image_roots=(root / "photos",),
        limits=Limits(max_upload_bytes=150_000, searches_per_minute=0),
    )
    with serving(create_app(config)) as url:
        yield url, photos, root


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/install_chromium.sh (needs root or sudo)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, site: tuple[str, list[Photo], Path]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(site[0] + "/")
    expect(page.locator("#model option")).to_have_count(3)
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def drop_file(page: Any, path: Path, mime: str = "image/jpeg") -> None:
    """Drop a file on the drop zone the way a user does (a DataTransfer carrying a File)."""
    data = base64.b64encode(path.read_bytes()).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [data, path.name, mime],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def crop_numbers(page: Any) -> tuple[int, int, int, int]:
    text = page.locator("#crop-info").text_content()
    found = re.search(r"= (\d+),(\d+),(\d+),(\d+) of", text)
    assert found, text
    x, y, w, h = (int(v) for v in found.groups())
    return x, y, w, h


def test_drop_crop_choose_model_and_k_search_and_open(page: Any, site: tuple[str, list[Photo], Path]) -> None:
    _, photos, _ = site
    coffee = next(p for p in photos if p.name == "coffee")
    drop_file(page, coffee.path)
    page.wait_for_selector("#stage:not([hidden])")
    assert "Whole image" in page.locator("#crop-info").text_content()

    # draw a box by dragging over the image
    img = page.locator("#query-image").bounding_box()
    page.mouse.move(img["x"] + img["width"] * 0.2, img["y"] + img["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(img["x"] + img["width"] * 0.75, img["y"] + img["height"] * 0.9, steps=6)
    page.mouse.up()
    x, y, w, h = crop_numbers(page)
    with Image.open(coffee.path) as im:
        width, height = im.size
    assert w == pytest.approx(width * 0.55, abs=4) and h == pytest.approx(height * 0.75, abs=4)

    # the 1:1 preset makes it square; dragging a corner handle keeps it square
    page.click("button.preset[data-ratio='1']")
    x, y, w, h = crop_numbers(page)
    assert abs(w - h) <= 1
    handle = page.locator(".handle.se").bounding_box()
    page.mouse.move(handle["x"] + 5, handle["y"] + 5)
    page.mouse.down()
    page.mouse.move(handle["x"] - 30, handle["y"] - 10, steps=4)
    page.mouse.up()
    x2, y2, w2, h2 = crop_numbers(page)
    assert w2 < w and abs(w2 - h2) <= 1 and (x2, y2) == (x, y)  # the opposite corner stayed

    # 16:9 preset, then the second model and k = 4
    page.click("button.preset[data-ratio='1.7777778']")
    _, _, w3, h3 = crop_numbers(page)
    assert w3 / h3 == pytest.approx(16 / 9, abs=0.03)
    page.select_option("#model", "tiny-b")
    page.fill("#k", "4")
    page.click("#search")
    page.wait_for_selector("#results li.hit")
    cards = page.locator("#results li.hit")
    assert cards.count() == 4
    summary = page.locator("#summary").text_content()
    assert "4 results for the region with tiny-b" in summary
    scores = [float(s) for s in page.locator("#results .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    names = page.locator("#results dd").all_text_contents()
    assert set(names) & {p.name for p in photos}
    for img in page.locator("#results img").all():
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("(i) => i.naturalWidth") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-search.png"), full_page=True)

    # clicking a result opens the stored image
    with page.context.expect_page() as opened:
        page.locator("#results a.thumb").first.click()
    new = opened.value
    new.wait_for_load_state()
    assert "/api/images/" in new.url and "size=full" in new.url
    assert new.evaluate("document.images.length") == 1  # Chromium's image viewer: the image loaded

    # "more like this" searches with the document id
    page.locator("#results button.similar").first.click()
    expect(page.locator("#summary")).to_contain_text("similar to")
    assert page.locator("#results li.hit").count() == 4


def test_choose_file_and_whole_image(page: Any, site: tuple[str, list[Photo], Path]) -> None:
    _, photos, _ = site
    rocket = next(p for p in photos if p.name == "rocket")
    page.set_input_files("#file", str(rocket.path))
    page.wait_for_selector("#stage:not([hidden])")
    page.fill("#k", "2")
    page.click("#search")
    page.wait_for_selector("#results li.hit")
    assert "for the image with tiny" in page.locator("#summary").text_content()
    first = page.locator("#results li.hit").first
    assert "rocket" in first.text_content()  # the whole photo finds itself first (score 1)
    assert float(first.locator(".score").text_content()) == pytest.approx(1.0, abs=1e-3)


def test_error_messages(page: Any, site: tuple[str, list[Photo], Path], tmp_path: Path) -> None:
    _, photos, _ = site
    # too large: refused in the page before any upload (the limit comes from /api/settings)
    big = tmp_path / "big.png"
    Image.effect_noise((300, 300), 80).convert("RGB").save(big)
    assert big.stat().st_size > 150_000
    drop_file(page, big, "image/png")
    message = page.locator("#message")
    message.wait_for(state="visible")
    assert "too large" in message.text_content()

    # a file the browser cannot show: refused in the page
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"this is text, not a JPEG")
    drop_file(page, fake)
    expect(page.locator("#message")).to_contain_text("cannot be shown")
    assert page.locator("#search").is_disabled()

    # an image the browser shows but the server does not read (SVG): the server's 415, explained
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80"><rect width="120" '
                   'height="80" fill="teal"/></svg>')  # fmt: skip
    drop_file(page, svg, "image/svg+xml")
    page.wait_for_selector("#stage:not([hidden])")
    page.click("#search")
    expect(page.locator("#message")).to_contain_text("not an image")
    assert "not an image this server can read" in message.text_content()

    # the cluster behind a model is down: a clear message, not a stack trace
    page.set_input_files("#file", str(photos[0].path))
    page.wait_for_selector("#stage:not([hidden])")
    page.select_option("#model", "down")
    page.click("#search")
    expect(page.locator("#message")).to_contain_text("cluster", timeout=20_000)
    assert "down or unreachable" in message.text_content()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "browser-error.png"))


def test_install_script_is_idempotent() -> None:
    script = ROOT / "scripts" / "install_chromium.sh"
    assert script.is_file() and shutil.which("bash")
    import subprocess

    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "chromium present" in out.stdout  # already installed: nothing done
