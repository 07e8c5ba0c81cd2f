"""Prefetching: the next item is made on a thread while the caller uses this one.

    for batch in prefetched(sampler.sample, limit=100):
        train(batch)                 # batch k+1 is being read and decoded meanwhile

At most ``ahead + 1`` items exist at once (the caller's and `ahead` made in advance;
one by default: `Sampler.batches`; the HTTP client's `Client.batches` sets its
``prefetch``). Closing the iterator (leaving the ``for`` loop normally, or
``close()``) stops and joins the thread.

A ``break`` in a script, or a DataLoader worker that exits, may leave the iterator
unclosed until the interpreter exits. An interpreter that exits while a daemon thread
is inside native code that gives up the GIL (torch, pybind11) ends that thread with
``pthread_exit`` through C++ frames, and the process aborts ("terminate called without
an active exception", SIGABRT). So the thread is also stopped and joined at exit
(`atexit`, which runs before daemon threads are cut off).
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["prefetched"]


def prefetched(
    make: Callable[[], T],
    *,
    limit: int | None = None,
    ahead: int = 1,
    name: str = "replay-prefetch",
) -> Iterator[T]:
    """``make()`` called for ever (or `limit` times) on a thread, `ahead` calls ahead.

    An exception from `make` is raised to the caller in place of the item.
    """
    if ahead < 1:
        raise ValueError(f"prefetch must be >= 1, got {ahead}")
    return _prefetched(make, limit, ahead, name)


def _prefetched(make: Callable[[], T], limit: int | None, ahead: int, name: str) -> Iterator[T]:
    results: queue.SimpleQueue[T | BaseException] = queue.SimpleQueue()
    slots = threading.Semaphore(ahead)
    stop = threading.Event()

    def produce() -> None:
        made = 0
        while limit is None or made < limit:
            slots.acquire()
            if stop.is_set():
                return
            try:
                results.put(make())
            except BaseException as e:  # handed to the consumer
                results.put(e)
                return
            made += 1

    thread = threading.Thread(target=produce, name=name, daemon=True)

    def halt() -> None:
        stop.set()
        slots.release()  # wakes a producer waiting for its slot
        if thread.is_alive():
            thread.join()  # lets the item being made finish

    atexit.register(halt)
    thread.start()
    try:
        made = 0
        while limit is None or made < limit:
            item = results.get()
            if isinstance(item, BaseException):
                raise item
            slots.release()  # start the next item while this one is used
            made += 1
            yield item
    finally:
        atexit.unregister(halt)
        halt()
