"""The race viewer in a real headless chromium (Debian's, driven by Playwright).

Playwright's own browser download cannot work here, so the system chromium
(``apt-get install chromium``) is launched by path. Skipped when either is
missing. Screenshots are kept under test-artifacts/ (git-ignored): look at them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import RACES, ThreadServer

import replay
from service.tools.process import ServerProcess
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
    assert [rows.nth(i).locator("td.id").inner_text() for i in range(len(ids))] == ids[::-1]
    assert "3 races" in page.locator("#totals").inner_text()

    page.locator(f'#races tbody tr[data-race-id="{ids[0]}"] td').nth(2).click()
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


def rows_are(page: Any, n: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('#races tbody tr').length === {n}")


def test_viewer_filters_and_plays(page: Any, server: ServerProcess) -> None:
    page.goto(server.url + "/")
    page.locator("#races tbody tr").first.wait_for()
    page.locator("#filter").fill("carracing")  # a substring of the env, any case
    rows_are(page, 2)
    page.locator("#filter").fill("track-b")  # of the map
    rows_are(page, 1)
    page.locator("#filter").fill("pure-pur")  # of the policy
    rows_are(page, 1)
    page.locator("#filter").fill("nothing-like-it")
    rows_are(page, 0)
    assert page.locator("#count").inner_text() == "0 of 0"
    page.locator("#filter").fill("other")
    rows_are(page, 1)
    page.locator("#races tbody tr td").nth(2).click()
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


def frame_step(page: Any, n: int, frame: str = "#frame") -> None:
    page.wait_for_function(f"document.querySelector('{frame}').dataset.step === '{n}'")


def hash_of(page: Any) -> dict[str, str]:
    fragment: str = page.evaluate("location.hash")
    return dict(part.split("=", 1) for part in fragment.lstrip("#").split("&") if part)


def test_deep_link_opens_the_frame_and_follows_scrubbing(
    page: Any, server: ServerProcess, served_store: Path
) -> None:
    ids = replay.open_store(served_store, mode="r").race_ids()
    prefix = next(
        ids[0][:n] for n in range(1, 27) if sum(i.startswith(ids[0][:n]) for i in ids) == 1
    )
    page.goto(f"{server.url}/#race={prefix.lower()}&step=30")  # any unique start of the id
    frame_step(page, 30)
    assert page.locator("#frame").get_attribute("data-race-id") == ids[0]
    assert page.locator("#sd-reward").inner_text() == "30.000"
    assert hash_of(page) == {"race": ids[0], "step": "30"}  # the full id, shareable
    page.locator("#scrubber").fill("12")
    frame_step(page, 12)
    assert hash_of(page) == {"race": ids[0], "step": "12"}
    page.evaluate(f"location.hash = '#race={ids[1]}&step=5'")  # a link followed in the tab
    page.wait_for_function(f"document.querySelector('#frame').dataset.raceId === '{ids[1]}'")
    frame_step(page, 5)


def test_plot_click_moves_the_frame(page: Any, server: ServerProcess, served_store: Path) -> None:
    race_id = replay.open_store(served_store, mode="r").race_ids()[0]  # 48 steps
    page.goto(f"{server.url}/#race={race_id}&step=0")
    frame_step(page, 0)
    plots = page.locator("#plots .plot")
    assert plots.count() == 3  # reward and return, action, terminated / truncated
    legend = page.locator("#plots").inner_text()
    for label in ("reward", "return", "action[0]", "action[1]", "action[2]", "terminated"):
        assert label in legend
    over = page.locator('#plots .plot[data-plot="1"] .u-over')
    box = over.bounding_box()
    over.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})
    page.wait_for_function("document.querySelector('#frame').dataset.step !== '0'")
    step = int(page.locator("#frame").get_attribute("data-step"))
    assert abs(step - 0.75 * 47) <= 1  # the step under the pointer
    assert hash_of(page)["step"] == str(step)
    assert page.locator("#sd-reward").inner_text() == f"{step}.000"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-plots.png"), full_page=True)


@pytest.mark.parametrize("width", [1000, 1400])
def test_race_list_columns_fit_and_sort(
    browser: Any, server: ServerProcess, served_store: Path, width: int
) -> None:
    context = browser.new_context(viewport={"width": width, "height": 900})
    try:
        page = context.new_page()
        page.goto(server.url + "/")
        page.locator("#races tbody tr").first.wait_for()
        shown = page.locator("#races-scroll").bounding_box()
        for name in ("race", "vs", "env", "map", "policy", "status", "steps", "return", "time"):
            box = page.locator("#races thead th", has_text=name).first.bounding_box()
            assert box is not None
            assert box["x"] + box["width"] <= min(width, shown["x"] + shown["width"]), name
        returns = [float(sum(range(n))) for *_, n, _ in RACES]
        page.locator("#races thead th", has_text="return").click()  # highest first
        page.wait_for_function("document.querySelector('#races th[aria-sort]') !== null")
        page.wait_for_function(
            f"document.querySelector('#races tbody td:nth-child(8)').innerText === "
            f"'{max(returns):.1f}'"
        )
        page.locator("#races thead th", has_text="env").click()
        page.wait_for_function(
            "document.querySelector('#races tbody td:nth-child(3)').innerText === 'CarRacing-v3'"
        )
        page.locator("#races thead th", has_text="env").click()  # again: the other way
        page.wait_for_function(
            "document.querySelector('#races tbody td:nth-child(3)').innerText === 'Other-v0'"
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"viewer-list-{width}.png"))
    finally:
        context.close()


def test_two_races_side_by_side_scrub_together(
    page: Any, server: ServerProcess, served_store: Path
) -> None:
    a, b = replay.open_store(served_store, mode="r").race_ids()[:2]  # 48 and 32 steps
    page.goto(f"{server.url}/#race={a}&step=10")
    frame_step(page, 10)
    page.locator(f'#races tbody tr[data-race-id="{b}"] button.compare').click()
    frame_step(page, 10, "#frame-b")
    assert page.locator("#frame-b").get_attribute("data-race-id") == b
    assert hash_of(page) == {"race": a, "step": "10", "with": b}
    page.locator("#scrubber").fill("40")  # past the shorter race: it stays on its last frame
    frame_step(page, 40)
    frame_step(page, 31, "#frame-b")
    assert page.locator("#sd-reward-b").inner_text() == "31.000"
    page.keyboard.press("Home")
    frame_step(page, 0)
    frame_step(page, 0, "#frame-b")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-compare.png"), full_page=True)
    page.locator("#compare-close").click()
    assert page.locator("#pane-b").is_hidden()
    assert "with" not in hash_of(page)


def test_a_race_being_recorded_grows_in_the_viewer(
    page: Any, tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store = replay.open_store(tmp_path / "store")
    with (
        ThreadServer(Settings(store=tmp_path / "store")) as server,
        store.new_race(env="Live-v0", fps=30, shard_size=8, flush_interval=0.05) as writer,
    ):

        def append_and_wait(frames_: list[npt.NDArray[np.uint8]], length: int) -> None:
            for f in frames_:
                writer.append(f, action=np.zeros(3, np.float32), reward=1.0)
            deadline = time.monotonic() + 30
            while store.race(writer.race_id).length < length:
                assert time.monotonic() < deadline, "the writer did not commit"
                time.sleep(0.05)

        append_and_wait(frames[:10], 10)
        page.goto(f"{server.url}/#race={writer.race_id}&step=9")
        frame_step(page, 9)
        assert page.locator("#scrubber").get_attribute("max") == "9"
        assert page.locator("#follow").is_checked()
        append_and_wait(frames[10:25], 25)
        page.wait_for_function("document.querySelector('#scrubber').max === '24'")
        frame_step(page, 24)  # on the last step with "follow live": the newest frame
        assert page.locator("#sd-return").inner_text() == "25.000"
        page.wait_for_function(
            "document.querySelector('#races tbody td:nth-child(7)').innerText === '25'"
        )
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-live.png"), full_page=True)


def test_favicon_help_and_lossless_frames(
    page: Any, tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store = replay.open_store(tmp_path / "store")
    with store.new_race(env="Lossless-v0", codec="zstd", shard_size=8) as writer:
        for f in frames[:3]:
            writer.append(f, reward=0.5)
    with ThreadServer(Settings(store=tmp_path / "store")) as server:
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        page.goto(f"{server.url}/#race={writer.race_id}&step=2")
        frame_step(page, 2)  # a zstd frame, shown as a JPEG the browser can draw
        assert page.locator("#frame").evaluate("img => img.naturalWidth") == 1600
        icon = httpx.get(server.url + "/favicon.ico")
        assert icon.status_code == 200
        assert icon.headers["content-type"] == "image/svg+xml"
        assert httpx.get(server.url + "/static/vendor/uplot/uPlot.iife.min.js").status_code == 200
        page.locator("body").press("?")
        assert page.locator("#help").is_visible()
        assert "Home" in page.locator("#help").inner_text()
        page.keyboard.press("Escape")
        assert not page.locator("#help").is_visible()
        assert missing == []


def test_routes_the_viewer_needs(http: httpx.Client, served_store: Path) -> None:
    ids = replay.open_store(served_store, mode="r").race_ids()
    full = http.get(f"/v1/races/{ids[0]}").json()
    assert full["total_return"] == float(sum(range(48)))
    assert http.get(f"/v1/races/{ids[0][:-3].lower()}").json()["race_id"] == ids[0]
    ambiguous = http.get(f"/v1/races/{ids[0][:2]}")
    assert ambiguous.status_code == 404
    assert "ambiguous" in ambiguous.json()["detail"]
    assert ids[1] in ambiguous.json()["detail"]
    page = http.get("/v1/races", params={"q": "RACING", "sort": "length"}).json()
    assert [r["length"] for r in page["items"]] == [32, 48]
    assert [r["total_return"] for r in page["items"]] == [float(sum(range(32))), sum(range(48))]
    page = http.get("/v1/races", params={"sort": "return", "desc": "true"}).json()
    assert [r["length"] for r in page["items"]] == [48, 32, 20]
    stored = http.get(f"/v1/races/{ids[0]}/frames/0", params={"format": "jpeg"})
    assert stored.content == http.get(f"/v1/races/{ids[0]}/frames/0").content  # JPEG as stored
