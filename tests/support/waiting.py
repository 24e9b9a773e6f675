"""Waiting for a condition in tests: bounded in time, never a fixed sleep standing in for a sync."""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

# Between two checks of a condition nobody signals (a peer list, another process's state): short,
# so a test waits little longer than the condition takes, and long enough not to flood a peer.
POLL_INTERVAL_S = 0.05


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout_s: float,
    *,
    what: str = "the condition",
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Return the first truthy result of ``predicate()`` (sync or async), checked at once and then
    every ``interval_s``; raise ``TimeoutError`` naming ``what`` and the last result after ``timeout_s``.

    An async predicate that hangs is cut off by the same deadline.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    checks = 0
    with anyio.move_on_after(timeout_s):
        while True:  # bounded by move_on_after
            checks += 1
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            last = result
            if result:
                return result
            await anyio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
    raise TimeoutError(f"{what} did not hold within {timeout_s} s ({checks} checks; last result: {last!r})")
