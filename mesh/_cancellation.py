"""CancellationToken: cancels pending calls that were linked to it."""

from __future__ import annotations

import threading
from asyncio import Future
from collections.abc import Callable
from typing import Any

# One lock for every token: held only to flip the flag or touch a callback list, never while a
# callback runs, so sharing it costs nothing and a token costs no lock of its own (one per message).
_LOCK = threading.Lock()


class CancellationToken:
    """A token used to cancel pending async calls.

    ``cancel()`` may be called from any thread; callbacks run in the thread that cancels.
    """

    __slots__ = ("_callbacks", "_cancelled")

    def __init__(self) -> None:
        self._cancelled = False
        self._callbacks: list[Callable[[], None]] | None = None

    def cancel(self) -> None:
        """Cancel pending async calls linked to this cancellation token."""
        with _LOCK:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._callbacks = self._callbacks, None
        for callback in callbacks or ():
            callback()

    def is_cancelled(self) -> bool:
        """Whether ``cancel()`` has been called."""
        return self._cancelled

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the token is cancelled (at once if it already is)."""
        with _LOCK:
            if not self._cancelled:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(callback)
                return
        callback()

    def remove_callback(self, callback: Callable[[], None]) -> None:
        """Forget a callback added with :meth:`add_callback` (no error if it is not there)."""
        with _LOCK:
            if self._callbacks is not None and callback in self._callbacks:
                self._callbacks.remove(callback)

    def link_future(self, future: Future[Any]) -> Future[Any]:
        """Cancel ``future`` when the token is cancelled."""

        def cancel() -> None:
            future.cancel()

        self.add_callback(cancel)
        return future
