"""An in-process mesh of N nodes on loopback, with fast timings, and a mesh-wide quiescence barrier."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import Any

from discovery import MembershipConfig

from .._config import MeshConfig
from .._node import MeshNode

FAST_MEMBERSHIP = MembershipConfig(
    probe_interval_s=0.2,
    probe_timeout_s=0.1,
    suspicion_timeout_s=0.8,
    suspicion_min_s=0.5,
    gossip_interval_s=0.3,
)
"""Failure detection in about a second: for tests on one machine."""

# How long teardown waits for the remaining nodes to see a closed one leave: a graceful leave is
# announced at once, so this only bounds a broken mesh.
_TEARDOWN_CONVERGE_S = 2.0

FAST_CONFIG = MeshConfig(
    join_timeout_s=3.0,
    stop_timeout_s=2.0,
    visibility_timeout_s=2.0,
    membership=FAST_MEMBERSHIP,
)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Wait until ``predicate()`` is true, checking after every short pause, at most ``timeout`` s.

    Raises:
        TimeoutError: naming ``what``.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def _node_quiet(node: MeshNode) -> tuple[bool, tuple[int, ...]]:
    link = node._link
    stats = link.transport.stats if link.transport is not None else {}
    idle = node._dispatcher.is_idle() and not node._tasks and not node._moving and link.unacknowledged() == 0
    counters = (
        node._dispatcher.completed,
        sum(p.sent for p in link.peers()),
        sum(p.credited for p in link.peers()),
        stats.get("frames_in", 0),
    )
    return idle, counters


async def quiesce(nodes: list[MeshNode], timeout: float = 10.0) -> None:
    """Wait until the mesh is quiet: on every node nothing is queued or running, every data
    message sent was acknowledged by its receiver, no call waits for a reply, and these counters
    stayed the same over two consecutive rounds (so nothing was in flight between the checks).

    Raises:
        TimeoutError: the mesh did not settle within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    previous: list[tuple[int, ...]] | None = None
    delay = 0.001
    while True:
        for node in nodes:
            if node.running:
                remaining = max(0.0, deadline - time.monotonic())
                try:
                    await asyncio.wait_for(node._dispatcher.join(), remaining)
                except TimeoutError:
                    break
        states = [_node_quiet(node) for node in nodes if node.running]
        counters = [c for _, c in states]
        if all(idle for idle, _ in states) and counters == previous:
            return
        previous = counters
        if time.monotonic() >= deadline:
            busy = [n.name for n, (idle, _) in zip(nodes, states, strict=False) if not idle]
            raise TimeoutError(f"the mesh did not become quiet within {timeout} s (busy: {busy})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)


class LocalMesh:
    """N nodes in this process and event loop, joined through the first one, on loopback.

    The nodes are named and identified ``node0``, ``node1``, ... in start order, so placement
    (which hashes node ids) is the same in every run: a failing hypothesis example replays.

    Example::

        async with LocalMesh(3) as mesh:
            await MyAgent.register(mesh.nodes[1], "worker", MyAgent)
            await mesh.nodes[0].publish_message(Job(1), TopicId("jobs", "a"))
            await mesh.quiesce()

    Args:
        n: how many nodes to start.
        config: node configuration (default: :data:`FAST_CONFIG`, failure detection in about 1 s).
        mesh: mesh name (default: a random one, so parallel test runs never meet).
        node_options: more keyword arguments for every :class:`MeshNode`.
    """

    def __init__(self, n: int, *, config: MeshConfig | None = None, mesh: str | None = None, **node_options: Any):
        if n < 1:
            raise ValueError("a mesh needs at least one node")
        self._n = n
        self._config = config or FAST_CONFIG
        self._mesh = mesh or f"test-{uuid.uuid4().hex[:8]}"
        self._options = node_options
        self.nodes: list[MeshNode] = []

    @property
    def config(self) -> MeshConfig:
        return self._config

    def _new_node(self, index: int, **overrides: Any) -> MeshNode:
        options: dict[str, Any] = {
            "name": f"node{index}",
            # Fixed ids, so that rendezvous placement (and with it a hypothesis run) replays exactly.
            "node_id": f"node{index}",
            "mesh": self._mesh,
            "discovery": "none",
            "config": self._config,
        }
        options.update(self._options)
        options.update(overrides)
        if self.nodes and "seeds" not in overrides:
            options["seeds"] = [n.address for n in self.nodes if n.running and n.address][:3]
        return MeshNode(**options)

    async def add_node(self, **overrides: Any) -> MeshNode:
        """Start one more node, joined to the others; returns once it sees every running node."""
        node = self._new_node(len(self.nodes), **overrides)
        await node.start()
        self.nodes.append(node)
        await self.converge()
        return node

    async def converge(self, timeout: float = 10.0) -> None:
        """Wait until every running node sees every other running node."""
        running = [n for n in self.nodes if n.running]
        ids = {n.node_id for n in running}

        def converged() -> bool:
            return all({p.node_id for p in n.peers} == ids - {n.node_id} for n in running)

        await wait_for(converged, timeout, "membership convergence")

    async def quiesce(self, timeout: float = 10.0) -> None:
        """See :func:`quiesce`."""
        await quiesce([n for n in self.nodes if n.running], timeout)

    async def stop_node(self, node: MeshNode) -> None:
        await node.stop()

    async def __aenter__(self) -> LocalMesh:
        try:
            for _ in range(self._n):
                node = self._new_node(len(self.nodes))
                await node.start()
                self.nodes.append(node)
            await self.converge()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close every node, newest first. After each, the others are given a moment to see it
        gone, so that they do not hand their agents over to it when they close in turn."""
        for node in reversed(self.nodes):
            was_running = node.running
            try:
                await node.close()
            except Exception:  # pragma: no cover - teardown must go on
                pass
            if was_running:
                try:
                    await self.converge(_TEARDOWN_CONVERGE_S)
                except TimeoutError:  # pragma: no cover - teardown must go on
                    pass

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def fast_config(**changes: Any) -> MeshConfig:
    """:data:`FAST_CONFIG` with some fields changed."""
    return replace(FAST_CONFIG, **changes)
