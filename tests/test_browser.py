"""End to end in Debian's headless Chromium (Playwright): drop an image, crop it, choose the model and k,
search, see the titled results beside the query's crop, open one in the detail view, search "more like
this", filter by metadata, load more up to the server's limit; the page's error messages; dark mode.
Screenshots of each state go to test-artifacts/screenshots/.

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
from gemsearch.plugin.web.app import _IMAGE_STATUS, create_app
from gemsearch.plugin.web.config import Limits, LocalStoreSpec, ModelSpec, OpenSearchStoreSpec, ServeConfig

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
LONG = "tiny-b-whitened-multiscale-gem-landmarks-2026"  # a model name the dropdown must show whole
MAX_K = 5
VIEWPORT = {"width": 1280, "height": 900}

pytestmark = pytest.mark.slow

Site = tuple[str, list[Photo], Path]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("browser")
    photos = write_photos(root / "photos", max_side=320)
    models = []
    for name, seed in (("tiny", 1), (LONG, 5)):
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
        limits=Limits(max_upload_bytes=150_000, searches_per_minute=0, max_k=MAX_K, default_k=2),
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


def open_page(browser: Any, url: str, **context: Any) -> tuple[Any, list[str]]:
    page = browser.new_context(viewport=VIEWPORT, **context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url + "/")
    expect(page.locator("#model option")).to_have_count(3)
    expect(page.locator("#filter-field option").first).to_contain_text("group")  # the fields have loaded
    return page, errors


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    page, errors = open_page(browser, site[0])
    yield page
    page.context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=full_page)


def drop_file(page: Any, path: Path, mime: str = "image/jpeg", data: bytes | None = None) -> None:
    """Drop a file on the drop zone the way a user does (a DataTransfer carrying a File)."""
    encoded = base64.b64encode(path.read_bytes() if data is None else data).decode()
    transfer = page.evaluate_handle(
        """([data, name, mime]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            return dt;
        }""",
        [encoded, path.name, mime],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def choose(page: Any, photo: Photo) -> None:
    """Choose the photo's file and wait until the page shows it."""
    page.set_input_files("#file", str(photo.path))
    with Image.open(photo.path) as im:
        expect(page.locator("#crop-info")).to_have_text(
            f"Whole image, {im.width}\u00d7{im.height} (drag on it to crop)"
        )


def search(page: Any, k: int | None = None, button: str = "#search") -> None:
    """Click search (or ``button``) and wait until the page has the answer."""
    if k is not None:
        page.fill("#k", str(k))
    results = page.locator("#results")
    before = results.get_attribute("data-answered") or "0"
    page.click(button)
    expect(results).not_to_have_attribute("data-answered", before)


def crop_numbers(page: Any) -> tuple[int, int, int, int]:
    text = page.locator("#crop-info").text_content()
    found = re.search(r"= (\d+),(\d+),(\d+),(\d+) of", text)
    assert found, text
    x, y, w, h = (int(v) for v in found.groups())
    return x, y, w, h


def card_titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator("#results .title").all_text_contents()]


def by_name(photos: list[Photo], name: str) -> Photo:
    return next(p for p in photos if p.name == name)


def test_drop_crop_choose_model_and_k_search(page: Any, site: Site) -> None:
    _, photos, _ = site
    coffee = by_name(photos, "coffee")
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

    # 16:9 preset, then the second model (its whole name in the list) and k = 4
    page.click("button.preset[data-ratio='1.7777778']")
    x3, y3, w3, h3 = crop_numbers(page)
    assert w3 / h3 == pytest.approx(16 / 9, abs=0.03)
    options = page.locator("#model option").all_text_contents()
    assert options == ["tiny", LONG, "down"]
    page.select_option("#model", LONG)
    assert page.evaluate(
        """() => {  // the closed list shows the whole name: the select is as wide as the text
            const s = document.getElementById('model'), span = document.createElement('span');
            span.style.font = getComputedStyle(s).font;
            span.textContent = s.selectedOptions[0].text;
            document.body.append(span);
            const fits = span.getBoundingClientRect().width <= s.clientWidth;
            span.remove();
            return fits;
        }"""
    )
    assert "tinyconv" in page.locator("#model-info").text_content()
    search(page, 4)
    cards = page.locator("#results li.hit")
    assert cards.count() == 4
    assert f"4 results for the region with {LONG}" in page.locator("#summary").text_content()
    scores = [float(s) for s in page.locator("#results .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)

    # each card is titled by its file name; the query's crop is shown beside the results
    assert set(card_titles(page)) <= {p.path.name for p in photos} and len(set(card_titles(page))) == 4
    assert page.locator("#query-label").text_content() == f"Query: region {x3},{y3},{w3},{h3} of coffee.jpg"
    thumb = page.locator("#query-thumb")
    expect(thumb).to_be_visible()
    natural = thumb.evaluate("(i) => [i.naturalWidth, i.naturalHeight]")
    assert natural[0] / natural[1] == pytest.approx(16 / 9, abs=0.05)
    assert "cosine similarity" in page.locator("#legend").text_content()
    assert "1 = identical" in page.locator("#legend").text_content()
    for image in page.locator("#results img").all():
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("(i) => i.naturalWidth") > 0

    # at 1280x900 the first results are above the fold, beside the query
    first = page.locator("#results li.hit").first.locator(".thumb img").bounding_box()
    assert first["y"] + first["height"] <= VIEWPORT["height"], first
    assert page.locator("#query-image").bounding_box()["y"] < first["y"]
    shot(page, "results.png")


def test_detail_view_and_more_like_this(page: Any, site: Site) -> None:
    _, photos, _ = site
    rocket = by_name(photos, "rocket")
    choose(page, rocket)
    search(page, 3)
    first = page.locator("#results li.hit").first
    assert first.locator(".title").text_content() == "rocket.jpg"  # the whole photo finds itself first
    assert float(first.locator(".score").text_content()) == pytest.approx(1.0, abs=1e-3)

    # the card opens the detail view from the keyboard: image, id, score, image reference, metadata
    first.locator("button.open-detail").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    assert page.locator("#detail-title").text_content() == "rocket.jpg"
    fields = dict(zip(dialog.locator("#detail-fields dt").all_text_contents(),
                      dialog.locator("#detail-fields dd").all_text_contents(), strict=True))  # fmt: skip
    assert fields["id"] == rocket.id and fields["image"] == str(rocket.path)
    assert fields["score"].startswith("1.0000") or fields["score"].startswith("0.9999")
    meta = dict(zip(dialog.locator("#detail-metadata dt").all_text_contents(),
                    dialog.locator("#detail-metadata dd").all_text_contents(), strict=True))  # fmt: skip
    assert meta == {key: str(value) for key, value in rocket.metadata.items()}
    big = dialog.locator("#detail-image img")
    expect(big).to_have_js_property("complete", True)
    with Image.open(rocket.path) as im:
        assert big.evaluate("(i) => i.naturalWidth") == im.width  # the stored file, full size
    assert "size=full" in (dialog.locator("#detail-open").get_attribute("href") or "")
    shot(page, "detail.png")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # "more like this" on the second card: the query panel shows that document and says so
    second = page.locator("#results li.hit").nth(1)
    title = second.locator(".title").text_content()
    second_id = second.get_attribute("data-id")
    search(page, button=f"#results li.hit[data-id='{second_id}'] button.similar")
    expect(page.locator("#doc-query-label")).to_have_text(f"Query: more like {title}")
    expect(page.locator("#query-label")).to_have_text(f"Query: more like {title}")
    assert page.locator("#drop").is_hidden() and page.locator("#presets").is_hidden()
    expect(page.locator("#doc-query-thumb img")).to_have_js_property("complete", True)
    expect(page.locator("#summary")).to_contain_text(f"results like {title}")
    ids = [c.get_attribute("data-id") for c in page.locator("#results li.hit").all()]
    assert len(ids) == 3 and second_id not in ids  # the query document itself is left out
    shot(page, "more-like-this.png")

    # from the detail view too; then back to the user's image
    page.locator("#results li.hit button.open-detail").first.click()
    detail_title = page.locator("#detail-title").text_content()
    search(page, button="#detail-similar")
    expect(page.locator("#doc-query-label")).to_have_text(f"Query: more like {detail_title}")
    page.click("#back-to-image")
    assert page.locator("#stage").is_visible() and page.locator("#doc-query").is_hidden()
    search(page)
    assert page.locator("#query-label").text_content() == "Query: rocket.jpg (whole image)"


def test_filters_from_the_fields_of_the_index(page: Any, site: Site) -> None:
    _, photos, _ = site
    fields = page.locator("#filter-field option").all_text_contents()
    assert fields == ["group (text)", "name (text)", "year (number)"]
    choose(page, photos[0])
    page.select_option("#filter-field", "year")
    page.select_option("#filter-op", "gte")
    page.fill("#filter-value", "2003")
    page.click("#filter-add")
    page.select_option("#filter-field", "group")
    page.select_option("#filter-op", "eq")
    page.fill("#filter-value", "even")
    page.keyboard.press("Enter")  # Enter in the value adds it too
    expect(page.locator("#filter-list li")).to_have_count(2)
    search(page, MAX_K)
    expected = {p.path.name for p in photos if p.metadata["year"] >= 2003 and p.metadata["group"] == "even"}
    assert set(card_titles(page)) == expected and expected
    assert 'filtered by year ≥ 2003, group is "even"' in page.locator("#summary").text_content()
    shot(page, "filters.png")

    # a second bound on the same field joins the first; removing a filter widens the search again
    page.select_option("#filter-field", "year")
    page.select_option("#filter-op", "lt")
    page.fill("#filter-value", "2005")
    page.click("#filter-add")
    search(page)
    assert set(card_titles(page)) == {p.path.name for p in photos if p.metadata["year"] in (2003, 2004)
                                      and p.metadata["group"] == "even"}  # fmt: skip
    page.click("#filter-list li:has-text('group') button")
    expect(page.locator("#filter-list li")).to_have_count(2)
    search(page)
    assert set(card_titles(page)) == {p.path.name for p in photos if p.metadata["year"] in (2003, 2004)}

    # a value the form cannot send says why, and adds nothing
    page.fill("#filter-value", "")
    page.click("#filter-add")
    expect(page.locator("#message")).to_have_text("Type a value for the filter.")
    expect(page.locator("#filter-list li")).to_have_count(2)


def test_load_more_up_to_the_servers_limit(page: Any, site: Site) -> None:
    _, photos, _ = site
    choose(page, photos[2])
    search(page, 2)
    more = page.locator("#load-more")
    counts = [page.locator("#results li.hit").count()]
    while more.is_visible():
        search(page, button="#load-more")
        counts.append(page.locator("#results li.hit").count())
    assert counts == [2, 4, MAX_K]  # pages of 2, then the server's limit from /api/settings
    expect(page.locator("#limit-note")).to_contain_text(f"{MAX_K} results: the most this server gives")
    titles = card_titles(page)
    assert len(set(titles)) == MAX_K and titles[0] == photos[2].path.name
    assert page.evaluate(
        "document.activeElement.closest('li.hit') === document.querySelectorAll('li.hit')[4]"
    )


def test_error_messages(page: Any, site: Site, tmp_path: Path) -> None:
    _, photos, _ = site
    message = page.locator("#message")
    # too large: refused in the page before any upload (the limit comes from /api/settings)
    big = tmp_path / "big.png"
    Image.effect_noise((300, 300), 80).convert("RGB").save(big)
    assert big.stat().st_size > 150_000
    drop_file(page, big, "image/png")
    expect(message).to_contain_text("too large")

    # a file the browser cannot show: refused in the page
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"this is text, not a JPEG")
    drop_file(page, fake)
    expect(message).to_contain_text("cannot be shown")
    assert page.locator("#search").is_disabled()

    # an image the browser shows but the server does not read (SVG): the server's 415, explained
    svg = tmp_path / "drawing.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80"><rect width="120" '
                   'height="80" fill="teal"/></svg>')  # fmt: skip
    drop_file(page, svg, "image/svg+xml")
    page.wait_for_selector("#stage:not([hidden])")
    search(page)
    expect(message).to_contain_text("not an image this server can read")

    # a good search, then k over the server's limit: said plainly, the previous results stay
    choose(page, photos[0])
    search(page, 3)
    before = card_titles(page)
    page.fill("#k", str(MAX_K + 20))
    search(page)
    expect(message).to_contain_text(f"at most {MAX_K} results")
    assert "previous search" in message.text_content()
    assert card_titles(page) == before and page.locator("#results").is_visible()

    # a JPEG cut short: the browser shows what arrived, the server says it is damaged
    cut = tmp_path / "cut.jpg"
    data = photos[1].path.read_bytes()
    drop_file(page, cut, data=data[: len(data) * 2 // 3])
    page.wait_for_selector("#stage:not([hidden])")
    page.fill("#k", "3")
    search(page)
    expect(message).to_contain_text("This file is damaged")
    assert card_titles(page) == before
    shot(page, "error-damaged.png")

    # the cluster behind a model is down: a clear message, not a stack trace
    choose(page, photos[0])
    page.select_option("#model", "down")
    search(page)
    expect(message).to_contain_text("cluster", timeout=20_000)
    assert "down or unreachable" in message.text_content() and card_titles(page) == before
    shot(page, "error-cluster-down.png")


def test_every_error_code_of_the_server_reads_as_a_sentence(page: Any) -> None:
    codes = {code for _, code in _IMAGE_STATUS.values()} | {
        "bad_image", "unknown_model", "not_found", "timeout", "rate_limited", "unavailable", "busy",
        "internal", "invalid_request", "bad_request",
    }  # fmt: skip
    texts = page.evaluate(
        """(codes) => Object.fromEntries(codes.map((code) => [code, Messages.forError(
            400, { code, message: "RAW-REASON" }, { max_k: 7, max_upload_bytes: 2 ** 20, max_pixels: 4e6 },
            new Response(null, { headers: { "Retry-After": "3" } }))]))""",
        sorted(codes),
    )
    for code, text in texts.items():
        if code in ("bad_request", "invalid_request"):  # the server's reason, with a plain opening
            assert text == "The search was refused: RAW-REASON.", code
        else:
            assert "RAW-REASON" not in text and text.endswith("."), (code, text)
    assert "1 MB" in texts["too_large"] and "4 megapixels" in texts["too_many_pixels"]
    assert "in 3 seconds" in texts["rate_limited"] and "damaged" in texts["truncated_image"]
    k_error = {"code": "invalid_request", "message": "k: Input should be less than or equal to 7"}
    assert page.evaluate("(e) => Messages.forError(422, e, { max_k: 7 })", k_error) == (
        "The server gives at most 7 results; ask for fewer."
    )


def test_dark_mode_follows_the_system(browser: Any, site: Site) -> None:
    url, photos, _ = site
    colours = {}
    for scheme in ("light", "dark"):
        page, errors = open_page(browser, url, color_scheme=scheme)
        choose(page, by_name(photos, "chelsea"))
        search(page, 4)
        colours[scheme] = page.evaluate(
            "() => [getComputedStyle(document.documentElement).backgroundColor,"
            " getComputedStyle(document.querySelector('li.hit')).backgroundColor]"
        )
        if scheme == "dark":
            shot(page, "dark.png")
        page.context.close()
        assert not errors
    assert colours["light"][0] != colours["dark"][0] and colours["light"][1] != colours["dark"][1]
    assert sum(map(int, re.findall(r"\d+", colours["dark"][0])[:3])) < 3 * 60  # dark, not just different


def test_install_script_is_idempotent() -> None:
    script = ROOT / "scripts" / "install_chromium.sh"
    assert script.is_file() and shutil.which("bash")
    import subprocess

    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "chromium present" in out.stdout  # already installed: nothing done
