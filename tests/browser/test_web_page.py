"""Browser tests of the web page served by ``elastichash serve`` (headless Debian Chromium).

One real standalone server per module (real model, real index, real sockets); each test
gets a fresh browser context. Screenshots go to ``test-artifacts/`` (gitignored).
Set ``ELASTICHASH_WEB_URL`` to run the same tests against an already running deployment
(for example ``docker compose up``) instead of starting a server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.imagegen import make_image

pytest.importorskip("playwright")
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
API_KEY = "web-test-key"
SERVER_START_S = 90.0
INDEXED_S = 30.0
POLL_S = 0.05
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_ready(base: str, proc: subprocess.Popen[bytes] | None, log: Path | None) -> None:
    deadline = time.monotonic() + SERVER_START_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            pytest.fail(f"elastichash serve exited with {proc.returncode}:\n{tail}")
        try:
            status, _ = _get(f"{base}/readyz", timeout=1.0)
            if status == 200:
                return
            last = f"HTTP {status}"
        except OSError as e:  # not listening yet
            last = str(e)
            # Block on the process briefly instead of sleeping: returns early if it dies.
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.2)
    pytest.fail(f"{base}/readyz not 200 within {SERVER_START_S:.0f}s (last: {last})")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("ELASTICHASH_WEB_URL")
    if external:
        _wait_ready(external.rstrip("/"), None, None)
        yield external.rstrip("/")
        return
    data = tmp_path_factory.mktemp("web-data")
    log = data / "server.log"
    port = _free_port()
    cmd = [str(ROOT / ".venv/bin/elastichash"), "serve", "--host", "127.0.0.1",
           "--port", str(port), "--data", str(data), "--api-key", API_KEY]
    # The checkout first on the path: an editable install made before the service packages
    # existed maps only ``elastichash``, and ``serve`` imports ``gateway``.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _upload(base: str, name: str, data: bytes, image_id: str | None = None,
            fields: dict[str, str] | None = None) -> str:
    """POST one image through the API (test set-up), return its id."""
    boundary = uuid.uuid4().hex
    named = {**(fields or {}), **({"id": image_id} if image_id is not None else {})}
    given = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                    for k, v in named.items())
    head = given + (f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{base}/v1/images", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}", "X-API-Key": API_KEY})
    with urllib.request.urlopen(req, timeout=10) as r:
        image_id: str = json.loads(r.read())["images"][0]["id"]
        return image_id


def _wait_indexed(base: str, ids: list[str]) -> None:
    deadline = time.monotonic() + INDEXED_S
    pending = list(ids)
    while pending and time.monotonic() < deadline:
        status, body = _get(f"{base}/v1/images/{pending[0]}")
        state = json.loads(body).get("status") if status == 200 else None
        assert state != "failed", body
        if state == "indexed":
            pending.pop(0)
        else:
            time.sleep(POLL_S)  # poll interval of a condition with a deadline, not a wait
    assert not pending, f"not indexed within {INDEXED_S}s: {pending}"


@pytest.fixture(scope="module")
def seeded(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """30 images indexed through the API; files of a few of them kept for querying."""
    folder = tmp_path_factory.mktemp("seed")
    ids, paths = [], []
    for seed in range(100, 130):
        data = make_image(seed, size=(160 + (seed % 3) * 60, 120))
        path = folder / f"seed-{seed}.jpg"
        path.write_bytes(data)
        paths.append(path)
        ids.append(_upload(base_url, path.name, data))
    _wait_indexed(base_url, ids)
    return {"ids": ids, "paths": paths}


def _open(browser: Browser, base_url: str, viewport: dict[str, int], key: str | None = API_KEY,
          errors: list[str] | None = None) -> Page:
    ctx = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    ctx.set_default_timeout(15_000)
    if key:
        ctx.add_init_script(f"localStorage.setItem('elastichash.apiKey', {json.dumps(key)})")
    page = ctx.new_page()
    if errors is not None:
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: _console(m, errors))
    page.goto(base_url + "/")
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    return page


def _console(msg: ConsoleMessage, errors: list[str]) -> None:
    # Failed requests the tests provoke on purpose (4xx) are logged by Chromium too.
    if msg.type == "error" and "Failed to load resource" not in msg.text:
        errors.append(msg.text)


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    errors: list[str] = []
    p = _open(browser, base_url, DESKTOP, errors=errors)
    yield p
    p.context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _poll(page: Page, expression: str, within_s: float = 30) -> None:
    """Wait until a page expression is true. Not page.wait_for_function: that evaluates its
    predicate with eval() inside the page, which the page's CSP rightly forbids."""
    deadline = time.monotonic() + within_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {within_s} s: {expression}")
        page.wait_for_timeout(50)


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # Lazy thumbnails below the fold would show as grey boxes in a full-page shot.
    page.locator("#gallery img").evaluate_all("els => els.forEach(e => { e.loading = 'eager' })")
    _poll(page, "[...document.querySelectorAll('#gallery img')].every(i => i.complete)")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def _assert_rows_justified(page: Page) -> None:
    """Tiles of one row share a height and every row but the last spans the gallery."""
    geo = page.evaluate("""() => {
        const g = document.querySelector('#gallery').getBoundingClientRect();
        const t = [...document.querySelectorAll('#gallery .tile')]
            .map(e => e.getBoundingClientRect())
            .map(r => [r.top, r.height, r.left, r.right]);
        return {left: g.left, right: g.right, tiles: t};
    }""")
    rows: dict[int, list[list[float]]] = {}
    for top, height, left, right in geo["tiles"]:
        rows.setdefault(round(top), []).append([height, left, right])
    assert rows
    for i, (_, tiles) in enumerate(sorted(rows.items())):
        assert max(t[0] for t in tiles) - min(t[0] for t in tiles) < 1.0, tiles
        assert abs(tiles[0][1] - geo["left"]) < 1.0
        if i < len(rows) - 1:
            assert abs(max(t[2] for t in tiles) - geo["right"]) < 1.5, (tiles, geo["right"])


def _search_file(page: Page, path: Path) -> None:
    page.set_input_files("#search-file", str(path))
    expect(page.locator(".results")).not_to_have_attribute("aria-busy", "true")
    expect(page.locator("#gallery .tile").first).to_be_visible()


def test_uploaded_images_become_indexed_then_similar_puts_the_clicked_image_first(
        page: Page, tmp_path: Path) -> None:
    paths = []
    for seed in range(1, 9):
        path = tmp_path / f"upload-{seed}.jpg"
        path.write_bytes(make_image(seed, size=(120 + 40 * (seed % 4), 120)))
        paths.append(path)
    page.set_input_files("#ingest-files", [str(p) for p in paths])

    rows = page.locator("#ingest-list .upload")
    expect(rows).to_have_count(len(paths))
    for path in paths:
        row = page.locator(f'.upload[data-filename="{path.name}"]')
        expect(row).to_have_attribute("data-status", "indexed", timeout=INDEXED_S * 1000)
    expect(page.locator("#ingest-summary")).to_contain_text(f"{len(paths)} indexed")
    expect(page.locator("#stats")).to_contain_text("images indexed")

    # Search by file: the query is shown, its own image comes back first at distance 0.
    # Exact ranks every image, so there are other results to click "Similar" on.
    page.select_option("#strategy", "exact")
    query_id = page.locator(f'.upload[data-filename="{paths[2].name}"]').get_attribute("data-id")
    _search_file(page, paths[2])
    expect(page.locator("#query-figure")).to_be_visible()
    first = page.locator("#gallery .tile").first
    expect(first).to_have_attribute("data-id", query_id or "")
    expect(first).to_have_attribute("data-distance", "0")
    expect(first.locator(".tile-distance")).to_be_visible()
    expect(page.locator("#search-status")).to_contain_text("candidates")
    expect(page.locator("#search-status")).to_contain_text(" ms")
    distances = [int(d) for d in page.locator("#gallery .tile").evaluate_all(
        "els => els.map(e => e.dataset.distance)")]
    assert distances == sorted(distances)

    # "Similar" on the third result: that image comes first at distance 0.
    third = page.locator("#gallery .tile").nth(2)
    clicked = third.get_attribute("data-id")
    assert clicked
    assert clicked != query_id
    third.locator(".tile-similar").click()
    expect(first).to_have_attribute("data-id", clicked)
    expect(first).to_have_attribute("data-distance", "0")
    expect(page.locator("#query-caption")).to_contain_text("Similar to")
    assert page.evaluate("location.hash") == f"#similar={clicked}"

    _assert_rows_justified(page)
    _shot(page, "web-results-desktop.png")


def test_non_images_are_refused_and_broken_images_fail_with_the_reason(
        page: Page, tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("this is not an image\n")
    whole = make_image(78, size=(400, 300))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    good = tmp_path / "fine.jpg"
    good.write_bytes(make_image(77))
    page.set_input_files("#ingest-files", [str(txt), str(truncated), str(good)])

    # Refused at upload: the gateway's error code and message are shown on the row.
    bad_row = page.locator('.upload[data-filename="notes.txt"]')
    expect(bad_row).to_have_attribute("data-status", "refused")
    reason = bad_row.get_attribute("data-reason")
    assert reason, "the refusal carries the server's error code"
    expect(bad_row.locator(".upload-detail")).to_contain_text(reason)
    # Accepted, then failed in the pipeline (or refused up front): either way, with a reason.
    broken = page.locator('.upload[data-filename="truncated.jpg"]')
    expect(broken).to_have_attribute("data-status", re.compile("^(failed|refused)$"),
                                      timeout=INDEXED_S * 1000)
    expect(broken.locator(".upload-detail")).not_to_be_empty()
    expect(page.locator('.upload[data-filename="fine.jpg"]')).to_have_attribute(
        "data-status", "indexed", timeout=INDEXED_S * 1000)
    expect(page.locator("#ingest-summary")).to_contain_text("2 failed")

    page.locator("#failures-box summary").click()
    expect(page.locator("#failures-status")).not_to_have_text("Loading…")
    broken_id = broken.get_attribute("data-id")
    if broken.get_attribute("data-status") == "failed":
        listed = page.locator(f'#failures-list li[data-id="{broken_id}"]')
        expect(listed).to_contain_text(broken.get_attribute("data-reason") or "")
        assert "1970" not in (listed.locator("time").get_attribute("datetime") or "")

    page.set_input_files("#search-file", str(txt))
    err = page.locator("#search-error")
    expect(err).to_be_visible()
    expect(err).to_contain_text("Search failed")
    expect(page.locator("#gallery")).to_be_hidden()


def test_an_empty_result_says_so(page: Page, seeded: dict[str, Any], tmp_path: Path) -> None:
    fresh = tmp_path / "never-indexed.png"
    fresh.write_bytes(make_image(9999, fmt="PNG"))
    page.fill("#max-distance", "0")
    page.select_option("#strategy", "exact")
    page.set_input_files("#search-file", str(fresh))
    expect(page.locator("#empty")).to_contain_text("No images within distance 0")
    expect(page.locator("#gallery")).to_be_hidden()
    # Widening the distance re-runs the query and fills the gallery.
    page.fill("#max-distance", "")
    expect(page.locator("#gallery .tile").first).to_be_visible()
    expect(page.locator("#empty")).to_be_hidden()


def test_scrolling_loads_more_results_page_by_page(page: Page, seeded: dict[str, Any]) -> None:
    page.fill("#k", "6")
    page.select_option("#strategy", "exact")
    _search_file(page, seeded["paths"][0])
    tiles = page.locator("#gallery .tile")
    expect(page.locator("#search-status")).to_contain_text("of ")
    for _ in range(4):  # each scroll to the bottom brings the sentinel into view
        page.locator("#more").scroll_into_view_if_needed()
        page.mouse.wheel(0, 4000)
    expect(tiles).not_to_have_count(6)
    ids = tiles.evaluate_all("els => els.map(e => e.dataset.id)")
    assert len(ids) > 6, ids
    assert len(ids) == len(set(ids)), ids
    distances = [int(d) for d in tiles.evaluate_all("els => els.map(e => e.dataset.distance)")]
    assert distances == sorted(distances)


def test_results_are_browsed_with_the_keyboard(page: Page, seeded: dict[str, Any]) -> None:
    page.select_option("#strategy", "exact")
    _search_file(page, seeded["paths"][1])
    tiles = page.locator("#gallery .tile")
    expect(tiles.nth(3)).to_be_visible()
    ids = tiles.evaluate_all("els => els.map(e => e.dataset.id)")
    focused_id = "document.activeElement.closest('.tile')?.dataset.id"

    tiles.first.locator(".tile-open").focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate(focused_id) == ids[1]
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(focused_id) == ids[0]
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # opens the large view of result 2
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer).to_have_attribute("data-id", ids[1])
    # The large view loads the preview sized for it, not the 256-pixel thumbnail.
    expect(page.locator("#viewer-image")).to_have_attribute(
        "src", re.compile(rf"/v1/images/{re.escape(ids[1])}/preview$"))
    _poll(page, "document.querySelector('#viewer-image').naturalWidth > 0", within_s=10)
    page.keyboard.press("ArrowRight")
    expect(viewer).to_have_attribute("data-id", ids[2])
    page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    # "close" is dispatched as a task after the dialog hides: wait for it, with a deadline.
    _poll(page, f"{focused_id} === {json.dumps(ids[2])}", within_s=5)

    # Tab reaches the tile's "Similar" button; Enter runs the search from it.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "tile-similar"
    page.keyboard.press("Enter")
    expect(tiles.first).to_have_attribute("data-id", ids[2])
    expect(tiles.first).to_have_attribute("data-distance", "0")


def test_the_api_key_is_asked_for_stored_and_sent(
        browser: Browser, base_url: str, tmp_path: Path) -> None:
    page = _open(browser, base_url, DESKTOP, key=None)
    try:
        img = tmp_path / "keyed.jpg"
        img.write_bytes(make_image(4242))
        page.set_input_files("#ingest-files", str(img))
        row = page.locator('.upload[data-filename="keyed.jpg"]')
        expect(row).to_have_attribute("data-status", "refused")
        expect(row).to_have_attribute("data-reason", "unauthorized")
        expect(row).to_contain_text("API key")

        page.locator("#settings summary").click()
        page.fill("#api-key", API_KEY)
        with page.expect_request(lambda r: r.url.endswith("/v1/stats")) as req:
            page.locator("#settings-form button[type=submit]").click()
        assert req.value.headers.get("x-api-key") == API_KEY
        assert page.evaluate("localStorage.getItem('elastichash.apiKey')") == API_KEY
        page.set_input_files("#ingest-files", str(img))
        expect(row.last).to_have_attribute("data-status", "indexed", timeout=INDEXED_S * 1000)
    finally:
        page.context.close()


def test_phone_layout_has_no_horizontal_scroll(
        browser: Browser, base_url: str, seeded: dict[str, Any]) -> None:
    errors: list[str] = []
    page = _open(browser, base_url, PHONE, errors=errors)
    try:
        page.select_option("#strategy", "exact")
        _search_file(page, seeded["paths"][2])
        expect(page.locator("#gallery .tile").nth(5)).to_be_visible()
        widths = page.evaluate(
            "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert widths[0] <= widths[1] == PHONE["width"], widths
        right = page.locator("#gallery .tile, .panel, button, input").evaluate_all(
            "els => Math.max(...els.filter(e => e.offsetParent).map("
            "e => e.getBoundingClientRect().right))")
        assert right <= PHONE["width"], right
        _assert_rows_justified(page)
        _shot(page, "web-results-phone.png")

        page.locator("#gallery .tile-open").first.click()
        box = page.locator("#viewer").bounding_box()
        assert box is not None
        assert box["x"] >= 0, box
        assert box["x"] + box["width"] <= PHONE["width"], box
        _shot(page, "web-viewer-phone.png")
        page.keyboard.press("Escape")
        expect(page.locator("#viewer")).to_be_hidden()
    finally:
        page.context.close()
    assert not errors, errors


def test_dropping_or_pasting_an_image_searches_with_it(
        page: Page, seeded: dict[str, Any]) -> None:
    data = seeded["paths"][3].read_bytes()
    target = seeded["ids"][3]
    # Playwright has no OS-level file drag or clipboard: dispatch the events the browser
    # would, with a real File in a real DataTransfer.
    dispatch = """([b64, kind]) => {
        const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
        const ev = kind === 'drop'
            ? new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})
            : new ClipboardEvent('paste', {clipboardData: dt, bubbles: true, cancelable: true});
        (kind === 'drop' ? document.querySelector('#dropzone') : document.body).dispatchEvent(ev);
    }"""
    b64 = base64.b64encode(data).decode()
    first = page.locator("#gallery .tile").first
    for kind in ("drop", "paste"):
        page.evaluate("document.querySelector('#gallery').replaceChildren()")
        page.evaluate(dispatch, [b64, kind])
        expect(first).to_have_attribute("data-id", target)
        expect(first).to_have_attribute("data-distance", "0")
        expect(page.locator("#query-caption")).to_have_text("dropped.jpg")


def test_a_refused_url_shows_the_error_code(page: Page) -> None:
    page.fill("#search-url", "http://127.0.0.1:9/private.jpg")
    page.locator("#url-form button[type=submit]").click()
    err = page.locator("#search-error")
    expect(err).to_be_visible()
    expect(err).to_contain_text("forbidden_url")
    expect(page.locator("#search-error")).to_have_attribute("role", "alert")
    # the browser cannot load it either: the URL as caption, no broken-image icon
    expect(page.locator("#query-caption")).to_contain_text("private.jpg")
    expect(page.locator("#query-image")).to_be_hidden()


def test_duplicates_are_shown_side_by_side_and_deleted_with_the_key(
        browser: Browser, base_url: str, seeded: dict[str, Any]) -> None:
    photo = make_image(4711, size=(240, 180))
    first = _upload(base_url, "dup.jpg", photo)
    _wait_indexed(base_url, [first])
    twin = _upload(base_url, "dup-twin.jpg", photo, image_id="dup-twin")
    _wait_indexed(base_url, [twin])
    keeper, other = first, twin  # same size, same code: the one ingested first is kept

    # Without a key the delete is refused and the page says how to fix it.
    page = _open(browser, base_url, DESKTOP, key=None)
    try:
        page.locator("#dup-find").click()
        group = page.locator(f'.dup-group[data-keeper="{keeper}"]')
        expect(group).to_be_visible()
        page.locator(f'.dup-member[data-id="{other}"] .dup-delete').click()
        expect(page.locator("#dup-error")).to_contain_text("API key")
        expect(group.locator(".dup-member")).to_have_count(2)
    finally:
        page.context.close()

    page = _open(browser, base_url, DESKTOP)
    try:
        page.fill("#dup-distance", "12")
        page.locator("#dup-find").click()  # out of range: the form refuses, nothing is sent
        expect(page.locator(".dup-group")).to_have_count(0)
        page.fill("#dup-distance", "8")
        page.locator("#dup-find").click()
        expect(page.locator("#dup-status")).to_contain_text("within 8 bits")
        group = page.locator(f'.dup-group[data-keeper="{keeper}"]')
        members = group.locator(".dup-member")
        expect(members).to_have_count(2)
        assert members.evaluate_all("els => els.map(e => e.dataset.id)") == [keeper, other]
        expect(members.first).to_contain_text("Keep")
        expect(members.first).to_contain_text("240\u00d7180")
        expect(members.nth(1)).to_contain_text("0 bits")
        a, b = members.first.bounding_box(), members.nth(1).bounding_box()
        assert a is not None
        assert b is not None
        assert a["y"] == b["y"], (a, b)  # side by side
        assert b["x"] >= a["x"] + a["width"], (a, b)
        _shot(page, "web-duplicates.png")

        with page.expect_request(lambda r: r.method == "DELETE") as req:
            members.nth(1).locator(".dup-delete").click()
        assert req.value.headers.get("x-api-key") == API_KEY
        expect(group).to_have_count(0)  # one image left: no longer a group
        expect(page.locator("#dup-status")).to_contain_text(f"Deleted {other}")
        status, _ = _get(f"{base_url}/v1/images/{other}")
        assert status == 404
        seeded["ids"] = [i for i in seeded["ids"] if i != other]
    finally:
        page.context.close()


def test_filter_chips_search_within_an_album(
        page: Page, base_url: str, seeded: dict[str, Any], tmp_path: Path) -> None:
    album = [_upload(base_url, f"trip-{s}.jpg", make_image(s), fields={"album": "trip"})
             for s in (5101, 5102)]
    _wait_indexed(base_url, album)
    page.select_option("#strategy", "exact")
    _search_file(page, seeded["paths"][2])
    tiles = page.locator("#gallery .tile")
    expect(tiles.nth(2)).to_be_visible()
    page.select_option("#filter-field", "album")
    page.fill("#filter-value", "trip")
    page.locator("#filter-form button[type=submit]").click()  # re-runs the search
    expect(page.locator('#filter-chips .chip[data-key="album"]')).to_have_text(
        re.compile("Album: trip"))
    expect(tiles).to_have_count(2)
    assert sorted(tiles.evaluate_all("els => els.map(e => e.dataset.id)")) == sorted(album)
    page.locator("#filter-chips .chip-remove").click()
    expect(page.locator("#filter-chips .chip")).to_have_count(0)
    expect(tiles).not_to_have_count(2)


def _labels(base: str, image_id: str) -> list[dict[str, Any]]:
    status, body = _get(f"{base}/v1/images/{image_id}")
    assert status == 200, body
    labels: list[dict[str, Any]] = json.loads(body).get("metadata", {}).get("labels") or []
    return labels


def test_the_words_box_finds_images_by_label_and_the_large_view_shows_them(
        page: Page, base_url: str, seeded: dict[str, Any]) -> None:
    from collections import Counter

    from elastichash.model.labels import vocabulary

    labelled = {i: ls for i in seeded["ids"] if (ls := _labels(base_url, i))}
    assert labelled, "the default model gives labels"
    name = Counter(ls[0]["name"] for ls in labelled.values()).most_common(1)[0][0]
    classes, _, _ = vocabulary().resolve(name)
    carrying = {i for i, ls in labelled.items() if any(lab["id"] in classes for lab in ls)}

    # the words box is laid out like the URL box above it (it was left unstyled, tiny)
    words_box = page.locator("#search-text").bounding_box()
    url_box = page.locator("#search-url").bounding_box()
    assert words_box is not None
    assert url_box is not None
    assert abs(words_box["width"] - url_box["width"]) < 2, (words_box, url_box)
    assert abs(words_box["height"] - url_box["height"]) < 2, (words_box, url_box)
    page.fill("#search-text", name)
    page.keyboard.press("Enter")
    expect(page.locator(".results")).not_to_have_attribute("aria-busy", "true")
    tiles = page.locator("#gallery .tile")
    expect(tiles.first).to_be_visible()
    shown = tiles.evaluate_all("els => els.map(e => e.dataset.id)")
    assert carrying <= set(shown), (name, carrying, shown)
    for image_id in shown:  # every image shown carries a class the words name
        assert any(lab["id"] in classes for lab in _labels(base_url, image_id)), image_id
    # best label score first, as the API ranks them
    best = [max(lab["score"] for lab in _labels(base_url, i) if lab["id"] in classes)
            for i in shown]
    assert best == sorted(best, reverse=True)

    tiles.first.locator(".tile-open").click()
    viewer = page.locator("#viewer")
    expect(viewer).to_be_visible()
    expect(viewer).to_have_attribute("data-id", shown[0])
    terms = page.locator("#viewer-meta dt")
    expect(terms.filter(has_text="Labels")).to_have_count(1)
    # words alone rank by label score: no distance (always 0) on the tiles or in the view
    expect(page.locator("#gallery .tile-distance").first).to_be_hidden()
    expect(terms.filter(has_text="Distance")).to_have_count(0)
    shown_labels = page.locator("#viewer-meta dt:text-is('Labels') + dd")
    for lab in _labels(base_url, shown[0]):  # each label with its score in percent
        expect(shown_labels).to_contain_text(re.compile(rf"{re.escape(lab['name'])} \d+%"))
    # a date, not the unix seconds the API sends
    ingested = page.locator("#viewer-meta dt:text-is('ingested_at') + dd")
    expect(ingested).not_to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    expect(ingested).to_contain_text(str(time.gmtime().tm_year))
    _shot(page, "words-search.png")


def test_one_progress_bar_counts_the_run_and_clear_waits_until_nothing_runs(
        page: Page, tmp_path: Path) -> None:
    paths = []
    for seed in range(60, 72):
        path = tmp_path / f"run-{seed}.jpg"
        path.write_bytes(make_image(seed))
        paths.append(path)
    # Record, from inside the page, whether "Clear finished" ever showed while a row was busy.
    page.evaluate("""() => {
        window.clearShownWhileBusy = false;
        const rows = '#ingest-list .upload';
        const check = () => {
            const busy = document.querySelector([`${rows}[data-status="waiting"]`,
                `${rows}[data-status="uploading"]`, `${rows}[data-status="queued"]`].join());
            const shown = !document.querySelector('#ingest-clear').hidden;
            if (busy && shown) window.clearShownWhileBusy = true;
        };
        new MutationObserver(check).observe(document.body,
            { subtree: true, attributes: true, childList: true });
    }""")
    page.set_input_files("#ingest-files", [str(p) for p in paths])
    expect(page.locator("#ingest-overall")).to_be_visible()
    expect(page.locator("#ingest-overall")).to_have_attribute("data-total", str(len(paths)))
    for path in paths:
        expect(page.locator(f'.upload[data-filename="{path.name}"]')).to_have_attribute(
            "data-status", "indexed", timeout=INDEXED_S * 1000)
    expect(page.locator("#ingest-overall")).to_have_attribute("data-done", str(len(paths)))
    expect(page.locator("#ingest-counts")).to_contain_text(f"{len(paths)} of {len(paths)} done")
    expect(page.locator("#ingest-counts")).to_contain_text("images/s")
    assert page.evaluate("document.querySelector('#ingest-progress').value") == len(paths)
    assert page.evaluate("window.clearShownWhileBusy") is False
    expect(page.locator("#ingest-clear")).to_be_visible()
    # The header count is fresh: it matches the server's once the run settled.
    count = json.loads(_get(f"{page.url.split('#')[0].rstrip('/')}/v1/stats")[1])["count"]
    expect(page.locator("#stats strong")).to_have_text(f"{count:,}")
    expect(page.locator("#empty-index")).to_be_hidden()
    page.locator("#ingest-clear").click()
    expect(page.locator("#ingest-list .upload")).to_have_count(0)
    expect(page.locator("#ingest-overall")).to_be_hidden()
