"""The local dispatcher: runs handler work items on a pool of worker tasks, inline.

A task per message costs more than the handler itself on the hot path (see PERFORMANCE.md). Here a
worker task pops items and awaits each one directly, so a handler that never suspends runs to the
end inside the worker, which is the current task while it runs (``asyncio.timeout`` and anyio cancel
scopes inside handlers bind to it, correctly). When a handler does suspend, its worker stays with it
and a check scheduled with ``call_soon`` (it runs as soon as the worker yields) wakes or spawns
another worker for the rest of the queue. Items start in queue order, so messages from one sender
to one recipient start in send order.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("mesh")

WorkItem = tuple[Any, ...]  # (async function, *args)

# A worker that has run handlers inline for this long lets the event loop turn once: handlers that
# never await would otherwise keep probe acknowledgements, credits and replies from going out.
YIELD_AFTER_S = 0.005


class Dispatcher:
    """Runs work items on at most ``max_workers`` concurrently running handlers.

    ``submit`` never blocks; producers outside handlers call :meth:`wait_for_room` to keep the queue
    under ``max_queued``.
    """

    def __init__(self, *, max_workers: int, max_queued: int, max_idle_workers: int = 4) -> None:
        self._queue: deque[WorkItem] = deque()
        self._max_workers = max_workers
        self._max_queued = max_queued
        self._low_water = max_queued // 2
        self._max_idle = max_idle_workers
        self._idle: deque[asyncio.Future[None]] = deque()
        self._pending = 0  # workers woken or spawned that have not resumed yet
        self._workers: set[asyncio.Task[None]] = set()
        self._busy = 0  # items started and not finished
        self._check_scheduled = False
        self._room_waiters: deque[asyncio.Future[None]] = deque()
        self._room_callbacks: list[Callable[[], None]] = []
        self._idle_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None
        self._running = False
        self.completed = 0
        # Items the node took out of the queue to wait (for a moving or settling agent): they
        # count toward max_queued, so that a node holding messages stops taking more data.
        self.held = 0

    @property
    def running(self) -> bool:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def saturated(self) -> bool:
        """True when no more handlers may start (the transport stops reading data then)."""
        return self._busy >= self._max_workers or len(self._queue) + self.held >= self._max_queued

    def is_idle(self) -> bool:
        return not self._queue and self._busy == 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Workers run in a clean copy of the starter's context, never in a handler's.
        self._context = contextvars.copy_context()
        self._idle_event = asyncio.Event()
        self._running = True
        if self._queue:
            self._schedule_check()

    def submit(self, item: WorkItem) -> None:
        """Queue an item; it starts after every item queued before it has started."""
        self._queue.append(item)
        self._wake()

    def submit_first(self, items: list[WorkItem]) -> None:
        """Queue ``items`` (in their order) ahead of everything queued: messages that waited, and
        were queued before anything that is queued now."""
        self._queue.extendleft(reversed(items))
        self._wake()

    def _wake(self) -> None:
        if self._idle_event is not None:
            self._idle_event.clear()
        if self._pending == 0 and self._running:
            if self._idle:
                self._pending += 1
                self._idle.popleft().set_result(None)
            elif not self._check_scheduled:
                self._schedule_check()

    async def wait_for_room(self) -> None:
        """Wait until the queue is below its bound (for producers that are not handlers)."""
        while len(self._queue) + self.held >= self._max_queued and self._running:
            assert self._loop is not None
            waiter = self._loop.create_future()
            self._room_waiters.append(waiter)
            await waiter

    def notify_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) as soon as the dispatcher is no longer saturated."""
        if callback not in self._room_callbacks:
            self._room_callbacks.append(callback)

    def _fire_room(self) -> None:
        callbacks, self._room_callbacks = self._room_callbacks, []
        for callback in callbacks:
            callback()

    async def join(self) -> None:
        """Wait until nothing is queued or running."""
        while not self.is_idle():
            assert self._idle_event is not None
            await self._idle_event.wait()

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for queued and running items to finish; True if they did."""
        if not self._running:
            return self.is_idle()
        try:
            await asyncio.wait_for(self.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> list[WorkItem]:
        """Cancel running items and return the queued ones that never started."""
        self._running = False
        for waiter in self._idle:
            if not waiter.done():
                waiter.cancel()
        self._idle.clear()
        tasks = list(self._workers)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._pending = 0
        self._busy = 0
        self.held = 0
        self._wake_room_waiters(all_=True)
        self._room_callbacks.clear()
        return self.drop_queued()

    def drop_queued(self) -> list[WorkItem]:
        items = list(self._queue)
        self._queue.clear()
        return items

    def _schedule_check(self) -> None:
        assert self._loop is not None
        self._check_scheduled = True
        self._loop.call_soon(self._check, context=self._context)

    def _check(self) -> None:
        self._check_scheduled = False
        if not self._queue or self._pending or not self._running:
            return
        if self._idle:
            self._pending += 1
            self._idle.popleft().set_result(None)
        elif len(self._workers) < self._max_workers:
            assert self._loop is not None
            self._pending += 1
            task = self._loop.create_task(self._worker(), context=self._context)
            self._workers.add(task)

    def _wake_room_waiters(self, all_: bool = False) -> None:
        while self._room_waiters and (all_ or len(self._queue) + self.held <= self._low_water):
            waiter = self._room_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def _worker(self) -> None:
        queue = self._queue
        loop = self._loop
        assert loop is not None
        task = asyncio.current_task()
        assert task is not None
        self._pending -= 1
        clock = time.monotonic
        run_since = clock()
        try:
            while self._running:
                if not queue:
                    if self._busy == 0 and self._idle_event is not None:
                        self._idle_event.set()
                    if len(self._idle) >= self._max_idle:
                        return
                    waiter = loop.create_future()
                    self._idle.append(waiter)
                    await waiter
                    self._pending -= 1
                    run_since = clock()
                    continue
                item = queue.popleft()
                if queue and not self._check_scheduled:
                    self._schedule_check()
                if self._room_waiters and len(queue) + self.held <= self._low_water:
                    self._wake_room_waiters()
                self._busy += 1
                try:
                    await item[0](*item[1:])
                except asyncio.CancelledError:
                    # A handler may raise CancelledError for its own reasons (an awaited call was
                    # cancelled by its token); only a cancel of this worker ends it.
                    if task.cancelling() or not self._running:
                        raise
                    logger.debug("work item ended with CancelledError")
                except Exception:
                    logger.exception("unexpected error in a work item")
                finally:
                    self._busy -= 1
                    self.completed += 1
                    if self._room_callbacks and not self.saturated:
                        self._fire_room()
                if clock() - run_since > YIELD_AFTER_S:
                    await asyncio.sleep(0)
                    run_since = clock()
        finally:
            self._workers.discard(task)
            if self._idle_event is not None and self.is_idle():
                self._idle_event.set()


def spawn(coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]], name: str | None = None) -> asyncio.Task[Any]:
    """Start a background task that is kept referenced in ``tasks`` until it ends."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


Callback = Callable[[], None]
