"""Helpers of the viewer tests, which drive the viewer in a real headless chromium
(Debian's, by Playwright): the browser's command line, where screenshots go, and waits
on what the page shows.

Every wait is a function (``() => ...``), never a string to evaluate: the viewer's
Content-Security-Policy forbids ``eval``, and Playwright evaluates a bare expression
with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

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
#: Screenshots of the viewer, kept for people to look at (git-ignored).
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def watch(page: Any) -> list[str]:
    """The page's script errors and Content-Security-Policy refusals, as they happen."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"error: {e}"))

    def console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            problems.append(f"CSP: {message.text}")

    page.on("console", console)
    return problems


def frame_step(page: Any, n: int, frame: str = "#frame") -> None:
    """Waits until `frame` shows step `n`."""
    page.wait_for_function(f"() => document.querySelector('{frame}').dataset.step === '{n}'")


def hash_of(page: Any) -> dict[str, str]:
    """The page's address fragment, as a dict."""
    fragment: str = page.evaluate("() => location.hash")
    return dict(part.split("=", 1) for part in fragment.lstrip("#").split("&") if part)


def screenshot(page: Any, name: str) -> Path:
    """Saves the viewport as test-artifacts/`name`.png."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
