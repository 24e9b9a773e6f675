"""A thread running an asyncio event loop, and calls into that loop from other threads.

The machinery under the synchronous facade (:class:`mesh.BackgroundNode`) and under
``mesh.testing.ThreadedMesh``: calls are handed over to the loop (a task linked to a
``concurrent.futures.Future`` the caller made first) and waited for, blocking or from another
loop, always with a bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._errors import NodeStoppedError

logger = logging.getLogger("mesh")

T = TypeVar("T")

# Default bound on every call: above start's join wait and stop's drain (5 s each by default)
# with room for a loaded machine, and short enough that a hung call fails a script, not hangs it.
DEFAULT_CALL_TIMEOUT_S = 30.0


def check_timeout(timeout: float | None) -> float | None:
    """:meta private: ``timeout`` as a bound for a wait (None: no limit); ValueError if not positive."""
    if timeout is None or math.isinf(timeout):
        return None
    if timeout <= 0 or math.isnan(timeout):
        raise ValueError(f"a timeout must be a positive number of seconds (math.inf for no limit), not {timeout!r}")
    return timeout


async def _invoke(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return await fn(*args, **kwargs)


def _start(loop: asyncio.AbstractEventLoop, request: Request[T], future: concurrent.futures.Future[T]) -> None:
    """On the loop: run ``request`` as a task whose outcome goes to ``future`` (unless the caller
    cancelled it already), and cancel the task when the caller cancels the future."""
    if future.cancelled():
        return
    task = loop.create_task(_invoke(request.fn, request.args, request.kwargs))

    def task_done(done: asyncio.Task[T]) -> None:
        if done.cancelled():
            future.cancel()
            future.set_running_or_notify_cancel()  # wakes concurrent.futures.wait (cancel does not)
        elif future.set_running_or_notify_cancel():
            exc = done.exception()
            if exc is None:
                future.set_result(done.result())
            else:
                future.set_exception(exc)

    def future_done(done: concurrent.futures.Future[T]) -> None:
        if done.cancelled():
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:
                pass  # the loop closed: the task ended with it

    task.add_done_callback(task_done)
    future.add_done_callback(future_done)


def awaiting(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function whether it returns an awaitable or a plain value."""

    async def run(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    return run


@dataclass(frozen=True)
class Request(Generic[T]):
    """:meta private: one call to run on a loop thread, with its bound and a description for errors."""

    fn: Callable[..., Awaitable[T]]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    timeout: float | None
    what: str


class LoopThread:
    """:meta private: an asyncio event loop on a daemon thread, and calls into it from elsewhere.

    Calls are blocking (:meth:`call`) or awaitable from another loop (:meth:`call_async`). A
    blocking call made on the loop's own thread raises instead of waiting for itself for ever.
    """

    def __init__(self, name: str, label: str) -> None:
        self._name = name
        self._label = label  # what users call the owner, in errors
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit: asyncio.Event | None = None
        self._finished: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self) -> None:
        """Start the thread and its loop, if not yet; returns once the loop runs."""
        with self._lock:
            if self._closed:
                raise NodeStoppedError(f"{self._label} is closed; create a new one")
            if self._thread is not None:
                return
            ready: concurrent.futures.Future[None] = concurrent.futures.Future()
            thread = threading.Thread(target=self._main, args=(ready,), name=self._name, daemon=True)
            thread.start()
            # The loop exists microseconds after the thread starts; the bound only guards a broken
            # interpreter state.
            ready.result(timeout=DEFAULT_CALL_TIMEOUT_S)
            self._thread = thread

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            asyncio.run(self._serve(ready))
        except BaseException as exc:  # pragma: no cover - asyncio.run itself failed
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.exception("the event loop of %s failed", self._name)
        finally:
            self._finished.set_result(None)

    async def _serve(self, ready: concurrent.futures.Future[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        ready.set_result(None)
        await self._exit.wait()
        # Leaving asyncio.run cancels whatever calls are still running; their callers get
        # NodeStoppedError (see _outcome).

    def submit(
        self, request: Request[T], future: concurrent.futures.Future[T] | None = None
    ) -> concurrent.futures.Future[T]:
        """Schedule ``request`` on the loop (starting the thread if needed); its outcome goes to
        ``future`` (a new one if not given). Cancelling the future cancels the request, also when
        the cancel comes before the loop has started it."""
        refused = NodeStoppedError(f"{self._label} is closed: {request.what} cannot run; create a new one")
        if self._closed:
            raise refused
        self.start()
        if future is None:
            future = concurrent.futures.Future()
        with self._lock:
            # Under the lock, so that a call is either scheduled before close() tells the loop to
            # exit (and is then cancelled by it, never lost) or refused.
            if self._closed or self._loop is None:
                raise refused
            self._loop.call_soon_threadsafe(_start, self._loop, request, future)
        return future

    def call(self, request: Request[T]) -> T:
        """Run ``request`` on the loop and wait for its outcome in this thread."""
        if self.in_loop_thread():
            raise RuntimeError(
                f"{request.what} blocks until the node's event loop has done it, and was called on that loop's "
                "own thread (from a handler, an agent factory or a callback), where it would wait for itself for "
                "ever: there, await the async node's method instead (`await node.node.<method>(...)`, or "
                "`await node.aio.<method>(...)`)"
            )
        # Made before the call is scheduled: a KeyboardInterrupt anywhere below (even inside
        # submit, once the loop may already run the call) cancels it.
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            self.submit(request, future)
            done, _ = concurrent.futures.wait([future], timeout=request.timeout)
        except BaseException:  # KeyboardInterrupt in the waiting thread: the call must not go on
            future.cancel()
            raise
        if not done:
            future.cancel()
            raise TimeoutError(f"{request.what} did not finish within {request.timeout} s")
        return self._outcome(future, request)

    async def call_async(self, request: Request[T]) -> T:
        """Run ``request`` on the loop and await its outcome from the caller's own event loop."""
        future = self.submit(request)
        waiter = asyncio.wrap_future(future)
        try:
            done, _ = await asyncio.wait({waiter}, timeout=request.timeout)
        except BaseException:  # the awaiting task was cancelled: cancel the call on the node too
            waiter.cancel()
            raise
        if not done:
            waiter.cancel()
            raise TimeoutError(f"{request.what} did not finish within {request.timeout} s")
        if not waiter.cancelled():
            waiter.exception()  # read here: the outcome is raised from ``future`` below
        return self._outcome(future, request)

    def _outcome(self, future: concurrent.futures.Future[T], request: Request[T]) -> T:
        if future.cancelled():
            if self._closed:
                raise NodeStoppedError(f"{request.what} was cut off: the node closed while it ran")
            raise concurrent.futures.CancelledError(f"{request.what} was cancelled")
        return future.result()

    def schedule(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` soon on the loop, from any thread; nothing if the loop is gone."""
        if self.in_loop_thread():
            callback()
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:  # pragma: no cover - the loop closed between the check and the call
                pass

    def _signal_exit(self) -> bool:
        """Mark closed and tell the loop to finish (cancelling calls still running); whether a
        thread was started."""
        with self._lock:
            self._closed = True
            exit_event, thread = self._exit, self._thread
        if exit_event is not None:
            self.schedule(exit_event.set)
        return thread is not None

    def close(self, timeout: float | None) -> None:
        """Let the loop finish and wait for its thread to end."""
        if self._signal_exit() and not self.in_loop_thread():
            try:
                self._finished.result(timeout)
            except TimeoutError:
                logger.warning("the event-loop thread %s did not end within %s s", self._name, timeout)

    async def close_async(self, timeout: float | None) -> None:
        """:meth:`close`, awaited from another event loop."""
        if self._signal_exit() and not self.in_loop_thread():
            try:
                await asyncio.wait_for(asyncio.wrap_future(self._finished), timeout)
            except TimeoutError:
                logger.warning("the event-loop thread %s did not end within %s s", self._name, timeout)
