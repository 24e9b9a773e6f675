"""CancellationToken: cancels pending calls that were linked to it."""

from __future__ import annotations

import threading
from asyncio import Future
from collections.abc import Callable
from typing import Any


class CancellationToken:
    """A token used to cancel pending async calls.

    ``cancel()`` may be called from any thread; callbacks run in the thread that cancels.
    """

    __slots__ = ("_callbacks", "_cancelled", "_lock")

    def __init__(self) -> None:
        self._cancelled = False
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def cancel(self) -> None:
        """Cancel pending async calls linked to this cancellation token."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def is_cancelled(self) -> bool:
        """Whether ``cancel()`` has been called."""
        return self._cancelled

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the token is cancelled (at once if it already is)."""
        with self._lock:
            if not self._cancelled:
                self._callbacks.append(callback)
                return
        callback()

    def remove_callback(self, callback: Callable[[], None]) -> None:
        """Forget a callback added with :meth:`add_callback` (no error if it is not there)."""
        with self._lock:
            try:
                self._callbacks.remove(callback)
            except ValueError:
                pass

    def link_future(self, future: Future[Any]) -> Future[Any]:
        """Cancel ``future`` when the token is cancelled."""

        def cancel() -> None:
            future.cancel()

        self.add_callback(cancel)
        return future
