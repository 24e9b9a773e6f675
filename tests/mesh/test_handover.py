"""A stopped node says so instead of claiming it knows no such agent type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from mesh import AgentId, MeshNode, MessageContext, NodeStoppedError, RoutedAgent, message_handler
from mesh.testing import FAST_CONFIG

# Bound on starting and joining the nodes, and on each batch of calls (generous for a loaded
# 2-core machine; normally each takes well under a second).
WAIT_S = 15.0
# stop() ends within stop_timeout_s (2 s in FAST_CONFIG), handovers included, plus cancelling what
# still runs then: this bound is far above it, so a stop that hangs fails the test instead.
STOP_BOUND_S = 20.0


@dataclass
class Add:
    n: int


class Counter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts")
        self.count = 0

    @message_handler
    async def on_add(self, message: Add, ctx: MessageContext) -> int:
        self.count += message.n
        return self.count

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]


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
