"""The X11 screen source, against a private Xvfb server that the tests start and draw on."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest

from capture.errors import CaptureError

pytest.importorskip("mss", reason="mss is not installed (pip install 'replay[capture]')")

from capture.screen import ScreenSource

RED = (255, 0, 0)
BLUE = (0, 0, 255)
#: The blue rectangle drawn on the red root window: left, top, width, height.
RECT = (100, 50, 200, 100)


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A fresh 1600x900x24 Xvfb display (the server picks a free number), red with a blue box."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    # -noreset: otherwise the server resets (and forgets the drawing) when its last client leaves
    args = ["-displayfd", str(write_fd), "-screen", "0", "1600x900x24", "-nolisten", "tcp"]
    server = subprocess.Popen(
        [xvfb, *args, "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as ready:  # Xvfb writes the display number once it listens
            number = ready.readline().strip()
        if not number:
            pytest.fail(f"Xvfb exited with {server.wait(timeout=5)} before it was ready")
        name = f":{number}"
        _draw(name)
        yield name
    finally:
        server.terminate()
        server.wait(timeout=10)


def _draw(display: str) -> None:
    """Paint the root window red and a blue rectangle on it, with plain Xlib."""
    path = ctypes.util.find_library("X11")
    if path is None:
        pytest.skip("libX11 is not installed")
    x11 = ctypes.CDLL(path)
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDefaultGC.restype = ctypes.c_void_p
    x11.XDefaultGC.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XSetWindowBackground.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    x11.XClearWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XSetForeground.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulong]
    x11.XFillRectangle.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p]
    x11.XFillRectangle.argtypes += [ctypes.c_int, ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
    x11.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open {display}"
    root = x11.XDefaultRootWindow(dpy)
    gc = x11.XDefaultGC(dpy, 0)
    x11.XSetWindowBackground(dpy, root, 0xFF0000)  # TrueColor 24-bit: 0xRRGGBB
    x11.XClearWindow(dpy, root)
    x11.XSetForeground(dpy, gc, 0x0000FF)
    x11.XFillRectangle(dpy, root, gc, *RECT)
    x11.XSync(dpy, 0)
    x11.XCloseDisplay(dpy)


def test_full_region_frames(display: str) -> None:
    with ScreenSource(display=display, fps=200) as source:
        assert (source.height, source.width, source.policy) == (900, 1600, "human")
        steps = list(source.race(max_steps=3))
    assert len(steps) == 3
    left, top, width, height = RECT
    for step in steps:
        assert step.frame.shape == (900, 1600, 3)
        assert step.frame.dtype == np.uint8
        assert step.frame.base is not None  # a view of the grab: the writer copies it once
        assert tuple(step.frame[0, 0]) == RED  # channel order: RGB, not X's BGRA
        assert tuple(step.frame[899, 1599]) == RED
        box = step.frame[top : top + height, left : left + width]
        assert (box == BLUE).all()
        assert tuple(step.frame[top + height, left]) == RED  # just below the box
        np.testing.assert_array_equal(step.action, np.zeros(3, np.float32))
        assert step.reward == 0.0
        assert not step.terminated
    assert [s.truncated for s in steps] == [False, False, True]


def test_a_region_is_cut_where_asked(display: str) -> None:
    left, top, _, height = RECT
    with ScreenSource(left=left - 10, top=top, width=20, height=height, display=display) as source:
        frame = source.grab()
    assert frame.shape == (height, 20, 3)
    assert (frame[:, :10] == RED).all()
    assert (frame[:, 10:] == BLUE).all()


def test_race_is_paced_at_fps(display: str) -> None:
    with ScreenSource(width=64, height=64, fps=50, display=display) as source:
        started = time.monotonic()
        steps = list(source.race(max_steps=6))
        elapsed = time.monotonic() - started
    assert len(steps) == 6
    assert elapsed >= 5 / 50  # six grabs are five periods apart


def test_region_outside_the_display_is_refused(display: str) -> None:
    with pytest.raises(CaptureError, match="does not fit"):
        ScreenSource(left=1000, top=0, width=1600, height=900, display=display)


def test_missing_display_is_a_clear_error() -> None:
    with pytest.raises(CaptureError, match="cannot open X display :4711"):
        ScreenSource(display=":4711")
