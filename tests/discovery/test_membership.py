"""The membership driver (discovery/_membership.py): no single failing action, bad input or bug stops
it; its timer always runs again, so joins and failure detection go on."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from discovery import MemberRecord, Membership, MembershipConfig, MembershipEvent
from discovery._swim import JOIN, PING

# Fast timings: a peer that never answers is declared dead in well under a second.
CFG = MembershipConfig(
    probe_interval_s=0.05, probe_timeout_s=0.02, suspicion_timeout_s=0.15, suspicion_min_s=0.1, gossip_interval_s=0.1
)
# Bound on what takes a few probe rounds here (a loaded 2-core machine may be much slower).
WAIT_S = 10.0


def record(node_id: str) -> MemberRecord:
    return MemberRecord(node_id, 1, 0, f"tcp://{node_id}.test:1", node_id, "m", (1, 0))


class FlakyChannel:
    """Records what is sent; raises for the members in ``broken`` (as a transport bug would)."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.sent: list[tuple[str, list[Any]]] = []

    def send(self, member: MemberRecord, message: list[Any], *, handshake: bool) -> None:
        if member.node_id in self.broken:
            raise RuntimeError(f"cannot send to {member.node_id}")
        self.sent.append((member.node_id, message))

    def send_to_endpoint(self, endpoint: str, message: list[Any]) -> None:
        self.sent.append((endpoint, message))


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.changed = asyncio.Event()

    def __call__(self, event: MembershipEvent) -> None:
        self.seen.append((event.kind, event.record.node_id if event.record is not None else None))
        self.changed.set()

    async def wait_for(self, kind: str, node_id: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while (kind, node_id) not in self.seen:
                self.changed.clear()
                await self.changed.wait()


async def started(channel: FlakyChannel, events: Events) -> Membership:
    membership = Membership(record("me"), CFG, channel, events)
    assert await membership.start([], timeout_s=WAIT_S)
    return membership


async def test_a_send_that_raises_costs_neither_the_other_sends_nor_the_timer() -> None:
    channel = FlakyChannel({"bad"})
    events = Events()
    membership = await started(channel, events)
    try:
        membership.receive(None, [JOIN, record("bad").encode()])  # answering it raises
        membership.receive(None, [JOIN, record("good").encode()])  # pushed to "bad" too: raises again
        assert {n for n, _ in channel.sent} >= {"good"}  # its STATE went out all the same
        assert membership.failed_actions >= 2
        # Neither answers probes: both are found dead, so the timer kept running through the failures.
        await events.wait_for("dead", "bad")
        await events.wait_for("dead", "good")
        assert any(n == "good" and m[0] == PING for n, m in channel.sent)
    finally:
        membership.stop()


async def test_a_tick_that_raises_is_logged_once_and_the_timer_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    channel = FlakyChannel(set())
    events = Events()
    membership = await started(channel, events)
    state = membership._state
    real_tick = state.tick
    failures = 0

    def tick(now: float) -> list[Any]:
        nonlocal failures
        if failures < 5:
            failures += 1
            raise KeyError("a bug")
        return real_tick(now)

    state.tick = tick  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="discovery"):
            membership.receive(None, [JOIN, record("peer").encode()])
            await events.wait_for("dead", "peer")  # detection needs ticks after the failing ones
        assert failures == 5 and membership.failed_actions == 5
        lines = [r for r in caplog.records if "membership tick failed" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]  # rate-limited
    finally:
        membership.stop()


async def test_a_message_that_trips_a_bug_is_counted_and_membership_goes_on() -> None:
    channel = FlakyChannel(set())
    events = Events()
    membership = await started(channel, events)
    state = membership._state
    real_receive = state.receive

    def receive(sender: str | None, message: Any, now: float) -> list[Any]:
        if message == ["trip"]:
            raise AttributeError("a bug")
        return real_receive(sender, message, now)

    state.receive = receive  # type: ignore[method-assign]
    try:
        membership.receive("peer", ["trip"])
        assert membership.bad_messages == 1
        membership.receive(None, [JOIN, record("peer").encode()])
        await events.wait_for("dead", "peer")
    finally:
        membership.stop()


async def test_an_event_handler_that_raises_is_counted() -> None:
    channel = FlakyChannel(set())
    events = Events()

    def on_event(event: MembershipEvent) -> None:
        events(event)
        raise RuntimeError("the node's handler failed")

    membership = Membership(record("me"), CFG, channel, on_event)
    assert await membership.start([], timeout_s=WAIT_S)
    try:
        membership.receive(None, [JOIN, record("peer").encode()])
        await events.wait_for("dead", "peer")
        assert membership.failed_actions >= 2  # joined, suspect, dead...
    finally:
        membership.stop()
