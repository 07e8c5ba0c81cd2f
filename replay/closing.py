"""`with thing:` for the classes that hold a resource and have a `close()`.

One mixin instead of the same ``__enter__``/``__exit__`` pair in every such class
(`Client`, `Sampler`, `Writer`, capture's `Source`, the service's `ServerProcess`):

    class Client(Closing):
        def close(self) -> None: ...

A class that ends differently when the block raised (a `Writer` marks its race
aborted) overrides `_leave`, not the protocol methods.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """Use as a context manager: `close()` runs when the block ends, however it ends."""

    def close(self) -> object:
        """Release what the object holds; subclasses define it."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(exc)

    def _leave(self, error: BaseException | None) -> None:
        """What leaving the ``with`` block does (`error`: what it raised, if anything)."""
        self.close()
