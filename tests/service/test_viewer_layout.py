"""The viewer in a real headless chromium: what is on screen at common window sizes,
where clicks go, how long errors stay, and that it works under its own
Content-Security-Policy. Screenshots go to test-artifacts/ (look at them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from browser_helpers import frame_step, hash_of, screenshot, watch
from service_helpers import ThreadServer

import replay
from service.middleware import CSP
from service.settings import Settings
from service.tools.process import ServerProcess

pytestmark = pytest.mark.browser


@pytest.fixture
def ids(served_store: Path) -> list[str]:
    """The served races, oldest first: 48, 32 and 20 steps."""
    return replay.open_store(served_store, mode="r").race_ids()


@pytest.fixture
def sized(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A tab of the window size the test is parametrized with (``(width, height)``)."""
    width, height = request.param
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems = watch(page)
    yield page
    context.close()
    assert problems == [], problems


def box(page: Any, selector: str) -> dict[str, float]:
    found: dict[str, float] | None = page.locator(selector).bounding_box()
    assert found is not None, selector
    return found


def plots_fitted(page: Any) -> None:
    """Waits until the plots are built and sized to their column."""
    page.wait_for_function(
        "() => { const b = document.querySelector('#plots'); const r = b.getBoundingClientRect();"
        " return b.dataset.fitted === `${Math.round(r.width)}x${Math.round(r.height)}`; }"
    )


def legend_value(page: Any, plot: int, series: int) -> str:
    """The value a plot's legend shows for a series (0: the step)."""
    cell = f'#plots .plot[data-plot="{plot}"] .u-legend .u-series:nth-child({series + 1}) .u-value'
    text: str = page.locator(cell).inner_text()
    return text


def assert_on_one_screen(page: Any, width: int, height: int, aspect: float) -> None:
    """The frame and every plot (legend included) lie inside the window; the frame's box
    has the race's aspect ratio (no letterbox bars); the plots' step axes line up."""
    frame = box(page, "#frame")
    assert frame["x"] >= 0, frame
    assert frame["x"] + frame["width"] <= width, frame
    assert frame["y"] >= 0, frame
    assert frame["y"] + frame["height"] <= height, frame
    assert frame["width"] >= 0.45 * width, frame  # a frame worth looking at
    assert abs(frame["width"] / frame["height"] - aspect) < 0.01, frame
    plots = [box(page, f'#plots .plot[data-plot="{i}"]') for i in range(3)]
    for plot in plots:
        assert plot["x"] >= frame["x"] + frame["width"], plot  # beside the frame
        assert plot["x"] + plot["width"] <= width, plot
        assert plot["y"] + plot["height"] <= height, plot
    overs = [box(page, f'#plots .plot[data-plot="{i}"] .u-over') for i in range(3)]
    assert all(o["height"] >= 40 for o in overs), overs  # plots worth reading
    assert max(o["x"] for o in overs) - min(o["x"] for o in overs) <= 1, overs
    assert max(o["width"] for o in overs) - min(o["width"] for o in overs) <= 1, overs
    cursors = page.evaluate(
        "() => state.plots.map((p) => p.over.getBoundingClientRect().left"
        " + p.valToPos(state.step, 'x'))"
    )
    assert max(cursors) - min(cursors) <= 1, cursors  # the step lines are one line


@pytest.mark.parametrize("sized", [(1400, 900), (1920, 1080)], indirect=True)
def test_frame_and_plots_on_one_screen(sized: Any, server: ServerProcess, ids: list[str]) -> None:
    page = sized
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    page.goto(f"{server.url}/#race={ids[0]}&step=30")
    frame_step(page, 30)
    plots_fitted(page)
    assert_on_one_screen(page, width, height, 1600 / 900)
    assert legend_value(page, 0, 1) == "30.000"  # reward at the current step
    assert legend_value(page, 1, 1) == "3.000"  # action[0]
    screenshot(page, f"viewer-{width}x{height}")

    page.locator("#scrubber").fill("20")  # the legends follow the step
    frame_step(page, 20)
    assert [legend_value(page, 0, 0), legend_value(page, 0, 1)] == ["20", "20.000"]
    over = box(page, '#plots .plot[data-plot="1"] .u-over')
    page.mouse.move(over["x"] + over["width"] * 0.25, over["y"] + over["height"] / 2)
    hovered = int(legend_value(page, 1, 0))  # while the pointer is over a plot: its step
    assert abs(hovered - 0.25 * 47) <= 1
    assert legend_value(page, 1, 1) == f"{0.1 * hovered:.3f}"
    assert legend_value(page, 0, 1) == f"{hovered:.3f}"  # the plots' cursors move together
    page.mouse.move(5, 5)  # away: back to the current step
    page.wait_for_function(
        "() => document.querySelector('#plots .plot .u-legend .u-value').innerText === '20'"
    )
    assert legend_value(page, 0, 1) == "20.000"

    page.locator(f'#races tbody tr[data-race-id="{ids[1]}"] button.compare').click()
    frame_step(page, 20, "#frame-b")
    plots_fitted(page)
    for pane in ("#frame", "#frame-b"):  # two frames side by side, still on one screen
        shown = box(page, pane)
        assert shown["y"] + shown["height"] <= height, shown
        assert shown["x"] + shown["width"] <= width, shown
        assert abs(shown["width"] / shown["height"] - 1600 / 900) < 0.01
    screenshot(page, f"viewer-compare-{width}x{height}")


@pytest.mark.parametrize("sized", [(1400, 900)], indirect=True)
def test_the_frame_takes_the_race_aspect(
    sized: Any, tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store = replay.open_store(tmp_path / "store")
    with store.new_race(env="Square-v0", width=1200, height=900) as writer:  # 4:3
        for f in frames[:6]:
            writer.append(f[:, 200:1400], action=np.zeros(3, np.float32), reward=1.0)
    race_id = writer.race_id
    with ThreadServer(Settings(store=tmp_path / "store")) as server:
        sized.goto(f"{server.url}/#race={race_id}&step=5")
        frame_step(sized, 5)
        plots_fitted(sized)
        assert sized.locator("#frame").evaluate("img => img.naturalWidth") == 1200
        assert_on_one_screen(sized, 1400, 900, 4 / 3)
        screenshot(sized, "viewer-4x3-1400x900")


def test_the_race_id_opens_the_race_and_vs_never_opens_it_twice(
    page: Any, server: ServerProcess, ids: list[str]
) -> None:
    a, b, c = ids
    page.goto(server.url + "/")
    page.locator(f'#races tbody tr[data-race-id="{a}"] td.id').click()  # the id itself
    frame_step(page, 0)
    assert page.locator("#frame").get_attribute("data-race-id") == a

    def row(race_id: str) -> Any:
        return page.locator(f'#races tbody tr[data-race-id="{race_id}"] button.compare')

    assert row(a).is_disabled()  # the shown race is not compared with itself
    row(b).click()
    frame_step(page, 0, "#frame-b")
    assert page.locator("#frame-b").get_attribute("data-race-id") == b
    assert row(b).is_disabled()

    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    cell = box(page, f'#races tbody tr[data-race-id="{c}"] td.id')
    page.mouse.move(cell["x"] + 2, cell["y"] + cell["height"] / 2)
    page.mouse.down()  # a drag over the id selects it to copy: it opens nothing
    page.mouse.move(cell["x"] + cell["width"] - 2, cell["y"] + cell["height"] / 2, steps=5)
    page.mouse.up()
    assert page.evaluate("() => getSelection().toString()") != ""
    page.locator("#scrubber").fill("5")  # later than the drag: its requests came first
    frame_step(page, 5)
    assert not [u for u in asked if c in u]

    page.locator(f'#races tbody tr[data-race-id="{b}"] td.id').click()  # the compared one
    page.wait_for_function(f"() => document.querySelector('#frame').dataset.raceId === '{b}'")
    assert page.locator("#pane-b").is_hidden()  # shown once, not beside itself

    page.goto(f"{server.url}/#race={a}&step=3&with={a[:12].lower()}")  # a race beside itself
    page.wait_for_function("() => !location.hash.includes('with')")
    frame_step(page, 3)
    assert page.locator("#pane-b").is_hidden()
    assert hash_of(page) == {"race": a, "step": "3"}


def test_an_error_stays_until_the_user_acts(
    page: Any, server: ServerProcess, ids: list[str]
) -> None:
    page.goto(f"{server.url}/#race=ZZZZ")
    shown = page.locator("#message")
    shown.wait_for()
    text = "404: no race id starting with 'ZZZZ'"
    assert text in shown.inner_text()
    for _ in range(2):  # two list refreshes (3 s apart) succeed meanwhile
        with page.expect_response(lambda r: "/v1/races?" in r.url and r.ok, timeout=10_000):
            pass
    assert shown.is_visible()
    assert text in shown.inner_text()
    page.locator(f'#races tbody tr[data-race-id="{ids[0]}"]').click()  # the user acts
    frame_step(page, 0)
    assert shown.is_hidden()

    page.evaluate("() => { location.hash = '#race=YYYY'; }")  # another bad link
    shown.wait_for()
    assert "'YYYY'" in shown.inner_text()
    page.locator("#message-close").click()
    assert shown.is_hidden()


def test_the_viewer_works_under_its_csp(
    browser: Any, server: ServerProcess, ids: list[str]
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        problems = watch(page)
        answer = page.goto(f"{server.url}/#race={ids[0]}&step=2")
        assert answer.headers["content-security-policy"] == CSP
        frame_step(page, 2)
        plots_fitted(page)
        page.locator(f'#races tbody tr[data-race-id="{ids[1]}"] button.compare').click()
        frame_step(page, 2, "#frame-b")
        page.locator("#play").click()
        page.wait_for_function("() => Number(document.querySelector('#frame').dataset.step) >= 6")
        page.locator("#help-button").click()
        assert page.locator("#help").is_visible()
        screenshot(page, "viewer-help-1400x900")
        page.locator("#help .close").click()  # a <form method="dialog">
        assert page.locator("#help").is_hidden()
        page.locator("#filter").fill("track-b")
        page.wait_for_function("() => document.querySelectorAll('#races tbody tr').length === 1")
        assert problems == []
        blocked = page.evaluate(  # what the policy is for: injected code does not run
            "() => { const s = document.createElement('script'); s.textContent = 'window.x = 1';"
            " document.head.append(s); const d = document.createElement('div');"
            " d.setAttribute('style', 'width: 123px'); document.body.append(d);"
            " return [window.x === undefined, d.offsetWidth !== 123]; }"
        )
        assert blocked == [True, True]
        deadline = time.monotonic() + 10
        while len(problems) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(50)  # until the two refusals are reported
        assert len(problems) == 2, problems
        assert all(p.startswith("CSP: ") for p in problems), problems
    finally:
        context.close()
