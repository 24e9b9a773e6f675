"""Handover on a graceful stop (DESIGN §2, "Ownership moves carry state when they can"): live agents
move to their next owners with their state, also when several nodes stop at the same time, and a
stopped node says so instead of claiming it knows no such agent type."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio
import msgpack
import pytest
from support.counters import Add, Counter
from support.placement import key_owned_by
from support.waiting import wait_until

from mesh import AgentId, MeshNode, NodeStoppedError
from mesh.testing import FAST_CONFIG

# Bound on starting and joining the nodes, and on each batch of calls (generous for a loaded
# 2-core machine; normally each takes well under a second).
WAIT_S = 15.0
# stop() ends within stop_timeout_s (2 s in FAST_CONFIG), handovers included, plus cancelling what
# still runs then: this bound is far above it, so a stop that hangs fails the test instead.
STOP_BOUND_S = 20.0
KEYS = [f"k{i:02d}" for i in range(80)]


class GatedCounter(Counter):
    """A Counter whose load_state waits for ``gate`` (when set), to hold a handover mid-way."""

    gate: asyncio.Event | None = None
    loading: asyncio.Event | None = None

    async def load_state(self, state: Mapping[str, Any]) -> None:
        if GatedCounter.gate is not None and GatedCounter.loading is not None:
            GatedCounter.loading.set()
            await GatedCounter.gate.wait()
        await super().load_state(state)


@pytest.fixture
async def four_nodes() -> AsyncIterator[list[MeshNode]]:
    """Four joined nodes in this process, a counter type registered on each, stopped at the end."""
    mesh_name = f"handover-{id(object()):x}"
    nodes = [
        MeshNode(name=f"n{i}", node_id=f"n{i}", mesh=mesh_name, discovery="none", config=FAST_CONFIG) for i in range(4)
    ]
    try:
        with anyio.fail_after(WAIT_S):
            for node in nodes:
                await Counter.register(node, "ctr", Counter)
                await GatedCounter.register(node, "gated", GatedCounter)
            await nodes[0].start()
            for node in nodes[1:]:
                node._seeds = (nodes[0].address,)
                await node.start()
            for node in nodes:
                await node.wait_for_peers(3, timeout=WAIT_S)
        yield nodes
    finally:
        for node in nodes:
            with anyio.fail_after(STOP_BOUND_S):
                await node.close()


async def _add_everywhere(caller: MeshNode, n: int) -> list[int]:
    with anyio.fail_after(WAIT_S):
        return list(await asyncio.gather(*(caller.send_message(Add(n), AgentId("ctr", key)) for key in KEYS)))


async def _sees_gone(node: MeshNode, gone: list[MeshNode]) -> None:
    """Wait until ``node``'s view no longer has ``gone``: a call sent to an owner as it leaves ends
    with AgentUnreachableError (the contract), so calls that must reach the new owners wait."""
    ids = {g.node_id for g in gone}
    await wait_until(lambda: not ids & set(node.routing_table.nodes), WAIT_S, what=f"{node.name} seeing them gone")


async def test_three_of_four_nodes_stopping_at_once_hand_every_agent_to_the_one_that_stays(
    four_nodes: list[MeshNode], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c, d = four_nodes
    assert await _add_everywhere(a, 5) == [5] * len(KEYS)
    leaving = {b.node_id, c.node_id, d.node_id}
    moved = [key for key in KEYS if a.routing_table.owner("ctr", key) in leaving]
    assert len(moved) > 30  # most keys live on the nodes that leave: the test means something

    caplog.set_level(logging.WARNING, logger="mesh")
    with anyio.fail_after(STOP_BOUND_S):
        await asyncio.gather(b.stop(), c.stop(), d.stop())
    await _sees_gone(a, [b, c, d])

    counts = dict(zip(KEYS, await _add_everywhere(a, 1), strict=True))
    lost = sorted(key for key, count in counts.items() if count != 6)
    assert lost == [], f"state lost for {len(lost)} of {len(moved)} moved keys: {lost}"
    assert a.statistics()["agents"] == len(KEYS)
    handed_over = sum(node.statistics()["handed_over"] for node in (b, c, d))
    assert handed_over >= len(moved)
    # A leaving node refuses handovers and the sender moves on: nothing is left unconfirmed.
    assert not [r.getMessage() for r in caplog.records if "not confirmed" in r.getMessage()]


async def test_a_node_that_starts_leaving_while_it_takes_an_agent_in_hands_it_on(
    four_nodes: list[MeshNode],
) -> None:
    a, b, c, _d = four_nodes
    table = a.routing_table
    # A key that b owns now and that goes to c once b has left.
    key = next(
        k
        for k in (f"g{i}" for i in range(1000))
        if table.owner("gated", k) == b.node_id and table.owner_skipping("gated", k, {b.node_id}) == c.node_id
    )
    agent_id = AgentId("gated", key)
    with anyio.fail_after(WAIT_S):
        assert await a.send_message(Add(5), agent_id) == 5
    GatedCounter.gate, GatedCounter.loading = asyncio.Event(), asyncio.Event()
    try:
        with anyio.fail_after(STOP_BOUND_S):
            b_stops = asyncio.create_task(b.stop())
            await GatedCounter.loading.wait()  # c is loading the state b hands it
            c_stops = asyncio.create_task(c.stop())
            await wait_until(lambda: c._leaving, WAIT_S, what="c begins to leave")
            GatedCounter.gate.set()
            await asyncio.gather(b_stops, c_stops)
    finally:
        GatedCounter.gate.set()
        GatedCounter.gate = GatedCounter.loading = None
    await _sees_gone(a, [b, c])
    with anyio.fail_after(WAIT_S):
        assert await a.send_message(Add(1), agent_id) == 6


async def test_every_node_stopping_at_once_finishes_in_bounded_time_and_says_what_is_lost(
    four_nodes: list[MeshNode], caplog: pytest.LogCaptureFixture
) -> None:
    await _add_everywhere(four_nodes[0], 5)
    caplog.set_level(logging.WARNING, logger="mesh")
    with anyio.fail_after(STOP_BOUND_S):
        await asyncio.gather(*(node.stop() for node in four_nodes))
    warnings = [r.getMessage() for r in caplog.records if "no node that stays" in r.getMessage()]
    assert len(warnings) == len(four_nodes), [r.getMessage() for r in caplog.records]
    assert all("ctr/k" in message and "state is lost" in message for message in warnings)
    # Nobody took them, so each node still holds its own agents, state included.
    assert sum(node.statistics()["agents"] for node in four_nodes) == len(KEYS)
    for node in four_nodes:
        for agent_id in list(node._agents.instances):
            assert await node.agent_save_state(agent_id) == {"count": 5}


async def test_sending_from_a_stopped_node_raises_node_stopped_even_for_a_type_hosted_elsewhere() -> None:
    mesh_name = f"stopped-{id(object()):x}"
    a = MeshNode(name="a", mesh=mesh_name, discovery="none", config=FAST_CONFIG)
    b = MeshNode(name="b", mesh=mesh_name, discovery="none", config=FAST_CONFIG)
    try:
        with anyio.fail_after(WAIT_S):
            await Counter.register(b, "ctr", Counter)
            await a.start()
            b._seeds = (a.address,)
            await b.start()
            await a.wait_for_peers(1, timeout=WAIT_S)
            assert await a.send_message(Add(1), AgentId("ctr", "k")) == 1
            await a.stop()
            with pytest.raises(NodeStoppedError, match="not running"):
                await a.send_message(Add(1), AgentId("ctr", "k"))
            with pytest.raises(NodeStoppedError, match="not running"):
                await a.send_message(Add(1), AgentId("nobody", "k"))
    finally:
        with anyio.fail_after(STOP_BOUND_S):
            await a.close()
            await b.close()


async def test_an_agent_handed_to_a_node_that_does_not_own_it_goes_on_to_its_owner(
    four_nodes: list[MeshNode], caplog: pytest.LogCaptureFixture
) -> None:
    """A sender whose view differs (a partition healing) hands an agent to the wrong node: that node
    passes it on to the owner it sees instead of keeping a copy nobody routes to. When the owner
    already has a copy, the handed-over state replaces its state, visibly (one copy stays)."""
    a, b, c, _d = four_nodes
    table = a.routing_table
    key = key_owned_by(table, "ctr", c.node_id, prefix="p")
    agent_id = AgentId("ctr", key)
    with anyio.fail_after(WAIT_S):
        assert await b._offer(agent_id, a.node_id, msgpack.packb({"count": 7}), None) is None
        await wait_until(lambda: agent_id in c._agents.instances, WAIT_S, what="c taking the agent over")
        assert agent_id not in a._agents.instances
        assert await a.send_message(Add(1), agent_id) == 8  # the state came along
        # Again, now that the owner has a copy: that copy takes the state, and the owner says so.
        caplog.set_level(logging.WARNING, logger="mesh")
        assert await b._offer(agent_id, a.node_id, msgpack.packb({"count": 100}), None) is None
        await wait_until(lambda: c.statistics()["handover_conflicts"] == 1, WAIT_S, what="c counting the conflict")
        assert agent_id not in a._agents.instances
        assert await a.send_message(Add(1), agent_id) == 101
    assert any("a copy already lives here" in r.getMessage() for r in caplog.records)
