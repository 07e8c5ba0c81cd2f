"""`replay.closing`: a `with` block closes the object however the block ends."""

from __future__ import annotations

import pytest

from replay.closing import Closing


class Resource(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_the_block_closes_on_exit_and_on_error() -> None:
    with Resource() as r:
        assert r.closed == 0
    assert r.closed == 1
    with pytest.raises(KeyError), Resource() as failing:
        raise KeyError("boom")
    assert failing.closed == 1  # closed, and the error still propagates
