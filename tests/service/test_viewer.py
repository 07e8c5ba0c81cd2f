"""The race viewer in a real headless chromium (Debian's, driven by Playwright).

Playwright's own browser download cannot work here, so the system chromium
(``apt-get install chromium``) is launched by path. Skipped when either is
missing. The screenshot is kept under test-artifacts/.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_helpers import ThreadServer

import replay
from service.process import ServerProcess
from service.settings import Settings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("no system chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert errors == [], errors


def test_viewer_lists_races_and_scrubs(
    page: Any, server: ServerProcess, served_store: Path
) -> None:
    store = replay.open_store(served_store, mode="r")
    ids = store.race_ids()
    page.goto(server.url + "/")
    rows = page.locator("#races tbody tr")
    rows.first.wait_for()
    assert rows.count() == len(ids)
    assert [rows.nth(i).get_attribute("data-race-id") for i in range(len(ids))] == ids[::-1]
    assert "3 races" in page.locator("#totals").inner_text()

    page.locator(f'#races tbody tr[data-race-id="{ids[0]}"]').click()
    frame = page.locator("#frame")
    page.wait_for_function("document.querySelector('#frame').dataset.step === '0'")
    assert frame.evaluate("img => img.naturalWidth") == 1600
    assert page.locator("#sd-reward").inner_text() == "0.000"
    first = frame.get_attribute("src")
    before = frame.screenshot()

    page.locator("#scrubber").fill("30")  # drag the scrubber to step 30
    page.wait_for_function("document.querySelector('#frame').dataset.step === '30'")
    assert frame.get_attribute("src") != first
    assert frame.screenshot() != before  # another frame is on screen
    assert page.locator("#step").inner_text().startswith("30 /")
    assert page.locator("#sd-reward").inner_text() == "30.000"
    assert page.locator("#sd-action").inner_text() == "[3.000, 6.000, 9.000]"

    page.keyboard.press("ArrowRight")  # focus is on the scrubber: it steps itself
    page.wait_for_function("document.querySelector('#frame').dataset.step === '31'")
    page.locator("#next").click()
    page.wait_for_function("document.querySelector('#frame').dataset.step === '32'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer.png"), full_page=True)
    assert (ARTIFACTS / "viewer.png").stat().st_size > 10_000


def test_viewer_filters_and_plays(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    page.locator("#races tbody tr").first.wait_for()
    page.locator("#filter-env").fill("Other-v0")
    page.locator("#filter-env").dispatch_event("change")
    page.wait_for_function("document.querySelectorAll('#races tbody tr').length === 1")
    page.locator("#races tbody tr").first.click()
    page.wait_for_function("document.querySelector('#frame').dataset.step === '0'")
    page.locator("#play").click()  # plays at the race's fps to its last step
    page.wait_for_function(
        "Number(document.querySelector('#frame').dataset.step) >= 5", timeout=10_000
    )


def test_viewer_with_a_token(page: Any, browser: Any, served_store: Path) -> None:
    with ThreadServer(Settings(store=served_store, token="tok")) as server:
        page.goto(server.url + "/")
        page.locator("#token-form").wait_for()  # asks for the token after a 401
        page.locator("#token-input").fill("tok")
        page.locator("#token-form button").click()
        page.locator("#races tbody tr").first.wait_for()
        page.locator("#races tbody tr").first.click()
        page.wait_for_function("document.querySelector('#frame').dataset.step === '0'")
        # in a fresh tab the token also works from the URL fragment (never sent to the server)
        context = browser.new_context()
        try:
            fresh = context.new_page()
            fresh.goto(server.url + "/#token=tok")
            fresh.locator("#races tbody tr").first.wait_for()
            assert "token" not in fresh.url  # taken out of the address bar
        finally:
            context.close()
