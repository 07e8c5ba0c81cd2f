"""Fixtures of the service tests: a real store of real frames, and a real server.

`served_store` is a store written by the `Writer` from the session's real
CarRacing frames (three races). `server` runs ``replay serve`` on it in its own
process on 127.0.0.1 and a free port (uvicorn, exactly as users run it), with
`service.tools.process.ServerProcess`, the class the benchmarks and soaks use.
`service_helpers.ThreadServer` runs an app in a thread of the test process, for
tests that need their own settings (a token) or their own store. `browser` is the
system chromium (by Playwright) and `page` a tab of it at 1600x1000 that fails its
test on any script error or Content-Security-Policy refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from browser_helpers import ARGS, CHROMIUM, watch
from service_helpers import RACES, write_race

import replay
from service.tools.process import ServerProcess


@pytest.fixture(scope="session")
def frames(carracing_frames: list[Any]) -> list[npt.NDArray[np.uint8]]:
    """The session's real CarRacing frames, (900, 1600, 3) uint8 each."""
    return [step.frame for step in carracing_frames]


@pytest.fixture(scope="session")
def served_store(
    tmp_path_factory: pytest.TempPathFactory, frames: list[npt.NDArray[np.uint8]]
) -> Path:
    """A store of three complete races of real frames (see `service_helpers.RACES`)."""
    path = tmp_path_factory.mktemp("service") / "store"
    store = replay.open_store(path)
    for env, map_, policy, n, backwards in RACES:
        chosen = frames[:n][::-1] if backwards else frames[:n]
        write_race(store, chosen, env=env, map=map_, policy=policy)
    return path


@pytest.fixture(scope="session")
def server(served_store: Path) -> Iterator[ServerProcess]:
    """``replay serve`` on the served store, without a token; decoded batches up to 64 MB."""
    with ServerProcess(served_store, env={"REPLAY_MAX_DECODED_BYTES": str(64 << 20)}) as proc:
        yield proc


@pytest.fixture(scope="session")
def url(server: ServerProcess) -> str:
    """Base URL of the session's server (no trailing slash)."""
    return server.url


@pytest.fixture
def http(url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client of the session's server."""
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless (skipped without Playwright or chromium)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip("no system chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab at 1600x1000; its test fails on a script error or a CSP refusal."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    problems = watch(pg)
    yield pg
    context.close()
    assert problems == [], problems
