"""Host mode: stock AutoGen workers connect to mesh nodes serving AgentRpc and join the mesh."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from interop.harness import FAST_BRIDGE, Children
from interop.interop_messages import NEWS_TOPIC, Answer, Ask, News
from interop.mesh_agents import Received, register_mesh_agents

from mesh import AgentId, AgentUnreachableError, MessageContext, RoutedAgent, TopicId, rpc
from mesh.bridge import AgentRpcServer
from mesh.testing import wait_for

pytestmark = pytest.mark.interop


def news_to(line: dict[str, Any], agent: str) -> str | None:
    """The text of a News line printed for ``agent``, else None."""
    return line["text"] if line.get("event") == "news" and line.get("agent") == agent else None


class Gate(RoutedAgent):
    """Holds every call until ``expected`` calls are in progress, then answers each with its own text."""

    def __init__(self, expected: int, arrived: list[str], all_in: asyncio.Event) -> None:
        super().__init__("answers once every caller is waiting")
        self._expected = expected
        self._arrived = arrived
        self._all_in = all_in

    @rpc
    async def ask(self, message: Ask, ctx: MessageContext) -> Answer:
        self._arrived.append(message.text)
        if len(self._arrived) == self._expected:
            self._all_in.set()
        await asyncio.wait_for(self._all_in.wait(), 20.0)
        return Answer(f"gate:{message.text}")


async def test_two_workers_calling_at_once_get_their_own_replies(
    children: Children, mesh_nodes: Callable[..., Any]
) -> None:
    """Both stock workers number their requests from "1": a stock host pairs the replies by that id
    and can swap or lose them (AutoGen issue #7016); host mode answers each on its own stream."""
    agents = await mesh_nodes("agents")
    arrived: list[str] = []
    all_in = asyncio.Event()
    await Gate.register(agents, "gate", lambda: Gate(2, arrived, all_in))
    a = await mesh_nodes("a", seeds=[agents.address])
    b = await mesh_nodes("b", seeds=[agents.address])
    async with AgentRpcServer(a, config=FAST_BRIDGE) as server_a, AgentRpcServer(b, config=FAST_BRIDGE) as server_b:
        w1 = await children.worker(server_a.address, "--no-agents", name="worker1")
        w2 = await children.worker(server_b.address, "--no-agents", name="worker2")
        w1.send({"op": "call", "id": 1, "type": "gate", "key": "same", "text": "from-w1"})
        w2.send({"op": "call", "id": 1, "type": "gate", "key": "same", "text": "from-w2"})
        reply1 = await w1.expect(lambda line: line.get("reply") == 1, what="worker1's reply")
        reply2 = await w2.expect(lambda line: line.get("reply") == 1, what="worker2's reply")
        assert sorted(arrived) == ["from-w1", "from-w2"]
        assert reply1 == {"reply": 1, "text": "gate:from-w1"}
        assert reply2 == {"reply": 1, "text": "gate:from-w2"}


async def test_workers_join_the_mesh_through_any_node(children: Children, mesh_nodes: Callable[..., Any]) -> None:
    agents = await mesh_nodes("agents")
    received = Received()
    await register_mesh_agents(agents, received)
    a = await mesh_nodes("a", seeds=[agents.address])
    b = await mesh_nodes("b", seeds=[agents.address])
    async with AgentRpcServer(a, config=FAST_BRIDGE) as server_a, AgentRpcServer(b, config=FAST_BRIDGE) as server_b:
        w1 = await children.worker(server_a.address, name="worker1")  # std_echo, std_listener
        w2 = await children.worker(server_b.address, "--no-agents", name="worker2")
        await wait_for(lambda: {"std_echo", "std_listener"} <= set(agents.routing_table.type_hosts), what="w1's types")

        # mesh -> worker RPC, and a worker -> worker RPC through the mesh
        assert await agents.send_message(Ask("m"), AgentId("std_echo", "k")) == Answer("std:m")
        w2.send({"op": "call", "id": 1, "type": "std_echo", "key": "k", "text": "w2"})
        assert await w2.expect(lambda line: line.get("reply") == 1) == {"reply": 1, "text": "std:w2"}
        # worker -> mesh RPC
        w1.send({"op": "call", "id": 2, "type": "mesh_echo", "key": "k", "text": "w1"})
        assert await w1.expect(lambda line: line.get("reply") == 2) == {"reply": 2, "text": "mesh:w1"}

        # mesh -> worker publish, and a worker's publish reaches the mesh and its own listener, once each
        await agents.publish_message(News("from-mesh"), TopicId(NEWS_TOPIC, "s"))
        await w1.expect(lambda line: line.get("event") == "news" and line["text"] == "from-mesh")
        w1.send({"op": "publish", "text": "from-w1"})
        await received.expect("news", "from-w1")
        await w1.expect(lambda line: line.get("event") == "news" and line["text"] == "from-w1")
        w1.send({"op": "publish", "text": "fence"})
        await received.expect("news", "fence")
        for agent in ("std_listener/w", "std_listener2/w"):
            await w1.expect(lambda line, a=agent: news_to(line, a) == "fence")
        assert received.count("news", "from-w1") == 1 and received.count("news", "from-mesh") == 1
        # Each of the worker's two listener types got each publish once.
        got = sorted((line["agent"], line["text"]) for line in w1.lines if line.get("event") == "news")
        published = [("s", "from-mesh"), ("w", "fence"), ("w", "from-w1")]
        assert got == sorted((f"{t}/{s}", text) for t in ("std_listener", "std_listener2") for s, text in published)

        # The worker goes away: its types leave the mesh, and calls to them fail clearly.
        children.kill(w1)
        await wait_for(lambda: "std_echo" not in agents.routing_table.type_hosts, 20.0, "w1's types to leave")
        with pytest.raises((AgentUnreachableError, LookupError)):
            await agents.send_message(Ask("late"), AgentId("std_echo", "k"), timeout=10.0)
        assert server_a.workers == []
