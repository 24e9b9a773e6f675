"""Membership: drives the SWIM state machine on the event loop and waits on it."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._channel import GossipChannel
from ._config import MembershipConfig
from ._record import MemberRecord, MemberStatus
from ._swim import HANDSHAKE_CODES, Event, Output, Send, SendEndpoint, SwimState

logger = logging.getLogger("discovery")

EventHandler = Callable[[Event], None]


class Membership:
    """Who is in the mesh and who is alive, for one node.

    Args:
        me: this node's record (its metadata is what the node wants others to know).
        config: timings.
        channel: how messages reach peers.
        on_event: called for every change (joined, updated, suspect, dead, left, self_dead, ...).
    """

    def __init__(
        self,
        me: MemberRecord,
        config: MembershipConfig,
        channel: GossipChannel,
        on_event: EventHandler,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._state = SwimState(me, config, rng)
        self._config = config
        self._channel = channel
        self._on_event = on_event
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._synced: asyncio.Event | None = None
        self._ack_waiters: list[asyncio.Future[None]] = []
        self._changed: asyncio.Event | None = None
        self._running = False
        self.bad_messages = 0
        # Actions that failed (a send the channel could not make, a bug): counted, logged rate-limited.
        self.failed_actions = 0
        self._error_log_at = 0.0
        self._errors_suppressed = 0

    @property
    def me(self) -> MemberRecord:
        return self._state.me

    @property
    def joined(self) -> bool:
        return self._state.joined

    @property
    def local_health(self) -> int:
        return self._state.local_health

    def members(self) -> list[MemberRecord]:
        """Members that are alive or suspect."""
        return self._state.alive()

    def member_status(self) -> dict[str, tuple[MemberRecord, MemberStatus]]:
        return {n: (m.record, m.status) for n, m in self._state.members.items()}

    def status_of(self, node_id: str, incarnation: int) -> MemberStatus | None:
        return self._state.status_of(node_id, incarnation)

    def record_of(self, node_id: str) -> MemberRecord | None:
        member = self._state.members.get(node_id)
        return None if member is None else member.record

    def dead_notice(self, node_id: str) -> list[Any] | None:
        """The message telling ``node_id`` (held dead here) that it is; None if unknown."""
        member = self._state.members.get(node_id)
        return None if member is None else self._state.dead_notice(member.record)

    def view_hash(self) -> bytes:
        return self._state.view_hash()

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self, seeds: Iterable[str], timeout_s: float) -> bool:
        """Join through ``seeds``; returns True once the first full state arrived (False after
        ``timeout_s`` without one; joining goes on in the background)."""
        self._loop = asyncio.get_running_loop()
        self._synced = asyncio.Event()
        self._changed = asyncio.Event()
        self._running = True
        self._run(self._state.start_join(seeds, self._clock()))
        if self._state.joined:
            self._synced.set()
        try:
            await asyncio.wait_for(self._synced.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def stop(self) -> None:
        self._running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in self._ack_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._ack_waiters.clear()

    def evict(self, node_id: str) -> None:
        """Hold ``node_id`` dead here (its key was withdrawn)."""
        self._run(self._state.evict(node_id, self._clock()))

    def leave(self) -> None:
        """Tell every member that this node leaves (they remove it at once)."""
        self._run(self._state.leave(self._clock()))

    def rejoin(self, incarnation: int, seeds: Iterable[str]) -> None:
        """Join again under a new incarnation."""
        assert self._synced is not None
        self._synced.clear()
        self._run(self._state.rejoin(incarnation, seeds, self._clock()))
        if self._state.joined:
            self._synced.set()

    def contact(self, endpoint: str) -> None:
        """A peer was discovered at ``endpoint``: join through it unless it is a member."""
        if self._running:
            self._run(self._state.contact(endpoint, self._clock()))

    # -- changes ----------------------------------------------------------------------------------

    async def set_metadata(self, metadata: bytes, timeout_s: float) -> set[str]:
        """Push new metadata to every alive member and wait until they acknowledged it, at most
        ``timeout_s``. Returns the members that did not acknowledge in time (gossip repairs them)."""
        self._run(self._state.set_metadata(metadata, self._clock()))
        if not self._running or self._loop is None:
            return set()
        deadline = self._loop.time() + timeout_s
        while self._state.awaiting_ack and self._running:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            waiter = self._loop.create_future()
            self._ack_waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                break
        return set(self._state.awaiting_ack)

    async def wait_for_change(self) -> None:
        assert self._changed is not None
        self._changed.clear()
        await self._changed.wait()

    # -- input ------------------------------------------------------------------------------------

    def receive(self, sender: str | None, message: Any) -> None:
        """A membership message from ``sender`` (None if the sender is not a member)."""
        if not self._running:
            return
        try:
            outputs = self._state.receive(sender, message, self._clock())
        except ValueError as exc:
            self.bad_messages += 1
            logger.debug("bad membership message from %s: %s", sender, exc)
            return
        except Exception:
            # A bug, reached by a peer's message: the message is lost, never the node's membership.
            self.bad_messages += 1
            self._log_error("handling a membership message from %s failed", sender or "a stranger")
            return
        self._run(outputs)

    def _tick(self) -> None:
        self._timer = None
        if not self._running:
            return
        outputs: list[Output] = []
        try:
            outputs = self._state.tick(self._clock())
        except Exception:
            self.failed_actions += 1
            self._log_error("a membership tick failed")
        self._run(outputs)  # schedules the next tick, whatever happened

    def _run(self, outputs: list[Output]) -> None:
        try:
            for out in outputs:
                # One action that fails (an endpoint the transport cannot dial, a bug) must not
                # cost the others, nor the next tick: failure detection and joins depend on it.
                try:
                    self._act(out)
                except Exception:
                    self.failed_actions += 1
                    self._log_error("membership action %s failed", type(out).__name__)
        finally:
            self._schedule()

    def _act(self, out: Output) -> None:
        if isinstance(out, Send):
            member = self._state.members.get(out.node_id)
            if member is not None:
                self._channel.send(member.record, out.message, handshake=out.message[0] in HANDSHAKE_CODES)
        elif isinstance(out, SendEndpoint):
            self._channel.send_to_endpoint(out.endpoint, out.message)
        else:
            self._event(out)

    def _log_error(self, message: str, *args: object) -> None:
        """Log the exception being handled, at most once per ``error_log_interval_s``."""
        now = self._clock()
        if now < self._error_log_at:
            self._errors_suppressed += 1
            return
        if self._errors_suppressed:
            message += f" ({self._errors_suppressed} more errors since the last report)"
        self._error_log_at = now + self._config.error_log_interval_s
        self._errors_suppressed = 0
        logger.warning(message, *args, exc_info=True)

    def _event(self, event: Event) -> None:
        if event.kind == "synced":
            if self._synced is not None:
                self._synced.set()
        elif event.kind in ("acked", "suspect"):
            if event.kind == "suspect" and event.record is not None:
                # A suspect is not waited for: it may be dead, and gossip repairs it if not.
                self._state.awaiting_ack.discard(event.record.node_id)
            self._wake_ack_waiters()
        if event.kind in ("dead", "left"):
            self._wake_ack_waiters()
        if self._changed is not None:
            self._changed.set()
        try:
            self._on_event(event)
        except Exception:
            self.failed_actions += 1
            self._log_error("membership event handler failed on %s", event.kind)

    def _wake_ack_waiters(self) -> None:
        waiters, self._ack_waiters = self._ack_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _schedule(self) -> None:
        if not self._running or self._loop is None:
            return
        try:
            delay = max(0.0, self._state.next_deadline() - self._clock())
        except Exception:
            # Never leave the timer unset: probes, joins and verdicts all run from it.
            self.failed_actions += 1
            self._log_error("computing the next membership deadline failed")
            delay = self._config.probe_interval_s
        when = self._loop.time() + delay
        if self._timer is not None:
            if abs(self._timer.when() - when) < 0.001:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._tick)
