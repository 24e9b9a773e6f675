"""Counters a node exposes, locally and to its peers (what ``agentmesh top`` shows)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mesh import AgentId, AgentUnreachableError, MessageContext, RoutedAgent, rpc
from mesh.testing import LocalMesh


@dataclass
class Ping:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        return message


async def test_a_node_reports_its_counters_and_its_peers_counters() -> None:
    async with LocalMesh(2) as local:
        caller, host = local.nodes
        await Echo.register(host, "echo", Echo)
        for i in range(20):
            assert await caller.send_message(Ping(i), AgentId("echo", f"k{i}")) == Ping(i)
        mine = caller.statistics()
        assert mine["sent"] == 20 and mine["peers"] == 1
        assert 0 < mine["rpc_latency_p50_us"] <= mine["rpc_latency_p99_us"]
        theirs = await caller.peer_statistics(host.node_id)
        assert theirs["delivered"] == 20 and theirs["agents"] == 20
        assert await caller.peer_statistics(caller.node_id) == caller.statistics()
        with pytest.raises(AgentUnreachableError):
            await caller.peer_statistics("not-a-member")
