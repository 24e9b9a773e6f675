"""ThreadedMesh: a LocalMesh driven by blocking calls, for synchronous tests (hypothesis rules)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mesh import (
    AgentId,
    MessageContext,
    NodeStoppedError,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    UnknownAgentTypeError,
    event,
    rpc,
)
from mesh.testing import ThreadedMesh

Log = list[tuple[AgentId, str]]


class Worker(RoutedAgent):
    def __init__(self, log: Log, node_name: str) -> None:
        super().__init__("works")
        self._log = log
        self._node_name = node_name

    @event
    async def on_job(self, message: str, ctx: MessageContext) -> None:
        self._log.append((self.id, self._node_name))

    @rpc
    async def run(self, message: int, ctx: MessageContext) -> str:
        if message < 0:
            raise ArithmeticError("negative job")
        return self._node_name


def test_a_threaded_mesh_drives_nodes_with_blocking_calls() -> None:
    log: Log = []
    with ThreadedMesh(3) as mesh:
        assert [n.name for n in mesh.nodes] == ["node0", "node1", "node2"]
        assert [n.node_id for n in mesh.nodes] == ["node0", "node1", "node2"]
        assert mesh.call(lambda: [len(n.peers) for n in mesh.nodes]) == [2, 2, 2]  # read on the mesh's loop
        node0, node1, _ = mesh.nodes
        mesh.call(Worker.register, node1, "worker", lambda: Worker(log, "node1"))
        mesh.call(node0.add_subscription, TypeSubscription("jobs", "worker"))

        for i in range(5):
            mesh.call(node0.publish_message, f"job{i}", TopicId("jobs", f"k{i}"))
        mesh.quiesce()
        assert sorted(log, key=str) == [(AgentId("worker", f"k{i}"), "node1") for i in range(5)]
        assert mesh.call(node0.send_message, 1, AgentId("worker", "a")) == "node1"
        assert mesh.call(threading.current_thread).name.startswith("mesh-testing-")

        # Errors arrive in the calling thread with their type.
        with pytest.raises(ArithmeticError, match="negative job"):
            mesh.call(node0.send_message, -1, AgentId("worker", "a"))
        with pytest.raises(UnknownAgentTypeError):
            mesh.call(node0.send_message, 1, AgentId("nobody", "a"))
        with pytest.raises(ValueError, match="Subscription already exists"):
            mesh.call(node0.add_subscription, TypeSubscription("jobs", "worker"))

        # Membership changes: a node joins, a node leaves.
        node3 = mesh.add_node()
        assert node3.name == "node3"
        assert mesh.call(lambda: len(node3.peers)) == 3
        mesh.stop_node(node1)
        mesh.converge()
        mesh.wait_for(lambda: all(len(n.peers) == 2 for n in mesh.nodes if n.running), what="the leave")
        with pytest.raises(UnknownAgentTypeError):
            mesh.call(node0.send_message, 1, AgentId("worker", "a"))
    assert not any(n.running for n in mesh.nodes)
    mesh.close()  # idempotent
    with pytest.raises(NodeStoppedError, match="this ThreadedMesh is closed"):
        mesh.call(len, [])


def test_bounds_and_misuse_give_clear_errors() -> None:
    with ThreadedMesh(1) as mesh:
        with pytest.raises(TimeoutError, match=r"the impossible did not happen within 0\.05 s"):
            mesh.wait_for(lambda: False, timeout=0.05, what="the impossible")
        never = asyncio.Event()
        with pytest.raises(TimeoutError, match=r"wait\(\) did not finish within 0\.05 s"):
            mesh.call(never.wait, timeout=0.05)

        def reenter() -> None:
            mesh.quiesce()

        with pytest.raises(RuntimeError, match="would wait for itself for ever"):
            mesh.call(reenter)
    with pytest.raises(ValueError, match="positive number of seconds"):
        ThreadedMesh(1, call_timeout_s=0)
