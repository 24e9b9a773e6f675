"""Node processes with a probe each, and a client node in the test process, for tests/hardening/.

Every process runs ``node_main.py`` with ``--probe`` (see ``hardening_agents``), so a test can ask
any node for its view of the mesh (``state``), its memory (``memory``), or make it misbehave. Node
ids are fixed (``node-<name>``) so placement is the same in every run. Timings are explicit: each
process gets the whole ``MeshConfig`` it should use as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from support.hardening_agents import PROBE_TYPE, REPLY_TYPES, GetMemory, GetState, Memory, NodeState
from support.node_main import REPLY_TYPES as NODE_MAIN_REPLY_TYPES
from support.procs import NodeProcess, NodeProcesses
from support.waiting import wait_until

import mesh
from mesh import AgentId, MeshConfig, MeshNode

CLIENT = "client"
# Bound on one probe or RPC of these tests: a call that hangs fails the test with a clear error.
CALL_TIMEOUT_S = 10.0
# Bound on every node seeing every other after a (re)start, on a loaded 2-core machine.
SETTLE_TIMEOUT_S = 20.0
# Bound on closing the test process's node in teardown.
CLOSE_TIMEOUT_S = 15.0


def node_id(name: str) -> str:
    return f"node-{name}"


def config_args(config: MeshConfig) -> list[str]:
    """The ``--config`` option that gives a node process exactly ``config``."""
    return ["--config", json.dumps(dataclasses.asdict(config))]


class Cluster:
    """Node processes and a client node in this process; see the module docstring."""

    def __init__(self, procs: NodeProcesses, config: MeshConfig) -> None:
        self.procs = procs
        self.config = config
        self.nodes: dict[str, NodeProcess] = {}
        self._client: MeshNode | None = None

    @property
    def client(self) -> MeshNode:
        assert self._client is not None, "start_client() first"
        return self._client

    def seed(self) -> list[str]:
        return [next(iter(self.nodes.values())).address] if self.nodes else []

    async def start_node(
        self,
        name: str,
        *,
        factories: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        config: MeshConfig | None = None,
    ) -> NodeProcess:
        """Start ``node_main.py --probe`` joined through the first node started (bounded)."""
        seeds = [p.address for n, p in self.nodes.items() if n != name][:1]
        args = ["--probe", *config_args(config or self.config), *extra_args]
        proc = await self.procs.start(name, seeds=seeds, node_id=node_id(name), factories=factories, extra_args=args)
        self.nodes[name] = proc
        return proc

    async def start_client(self, *, config: MeshConfig | None = None, **options: Any) -> MeshNode:
        client = MeshNode(
            name=CLIENT,
            discovery="none",
            seeds=self.seed(),
            node_id=node_id(CLIENT),
            config=config or self.config,
            **options,
        )
        for reply_type in (*REPLY_TYPES, *NODE_MAIN_REPLY_TYPES):
            client.add_message_serializer(mesh.try_get_known_serializers_for_type(reply_type))
        self._client = client
        await client.start()
        return client

    async def close_client(self) -> None:
        if self._client is not None:
            with anyio.fail_after(CLOSE_TIMEOUT_S):
                await self._client.close()

    async def call(self, message: Any, recipient: AgentId, timeout: float = CALL_TIMEOUT_S) -> Any:
        return await self.client.send_message(message, recipient, timeout=timeout)

    async def probe(self, name: str, message: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return await self.call(message, AgentId(PROBE_TYPE, name), timeout)

    async def state(self, name: str) -> NodeState:
        state = await self.probe(name, GetState())
        assert isinstance(state, NodeState)
        return state

    async def memory(
        self, name: str, *, reset_peak: bool = False, collect: bool = True, snapshot: bool = False, top: int = 0
    ) -> Memory:
        memory = await self.probe(name, GetMemory(collect, reset_peak, snapshot, top))
        assert isinstance(memory, Memory)
        return memory

    def client_view(self) -> dict[str, int]:
        """node id -> incarnation of every peer the client sees."""
        return {p.node_id: p.incarnation for p in self.client.peers}

    async def views_agree(self, names: Iterable[str] | None = None) -> bool:
        """Whether the client and the named processes (default: all) see exactly each other."""
        names = list(self.nodes if names is None else names)
        everyone = {node_id(n) for n in names} | {node_id(CLIENT)}
        if set(self.client_view()) != everyone - {node_id(CLIENT)}:
            return False
        for name in names:
            if set((await self.state(name)).peers) != everyone - {node_id(name)}:
                return False
        return True

    async def settle(self, names: Iterable[str] | None = None, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
        names = list(self.nodes if names is None else names)
        await self.client.wait_for_peers(len(names), timeout=timeout_s)
        await wait_until(lambda: self.views_agree(names), timeout_s, what=f"{names} and the client seeing each other")

    def describe(self) -> str:
        """The client node: its peers and non-zero counters, for a failing test's report."""
        if self._client is None:
            return "<no client>"
        node = self._client
        lines = [f"{node.name} {node.node_id} inc {node.incarnation} at {node.address}, running={node.running}"]
        lines += [f"  peer {p.name} {p.node_id} inc {p.incarnation} {p.status} {p.address}" for p in node.peers]
        lines.append(f"  counters: { {k: v for k, v in node.statistics().items() if v} }")
        return "\n".join(lines)


class ViewWatcher:
    """Records how the client sees each peer over time: statuses seen, and every moment a peer
    was missing from its view or came back under another incarnation. Run :meth:`watch` in a task."""

    POLL_S = 0.01  # suspicion does not change the routing view, so statuses are polled

    def __init__(self, client: MeshNode) -> None:
        self._client = client
        self.statuses: dict[str, set[str]] = {}
        self.incarnations: dict[str, list[int]] = {}
        self.missing_since: dict[str, float] = {}
        self.dropped_at: dict[str, list[float]] = {}
        client.add_view_listener(self.sample)

    def sample(self) -> None:
        now = time.monotonic()
        seen = {p.node_id: p for p in self._client.peers}
        for nid, peer in seen.items():
            self.statuses.setdefault(nid, set()).add(peer.status)
            incarnations = self.incarnations.setdefault(nid, [])
            if not incarnations or incarnations[-1] != peer.incarnation:
                incarnations.append(peer.incarnation)
            self.missing_since.pop(nid, None)
        for nid in self.incarnations:
            if nid not in seen and nid not in self.missing_since:
                self.missing_since[nid] = now
                self.dropped_at.setdefault(nid, []).append(now)

    async def watch(self) -> None:
        while True:  # cancelled by the test's task group
            self.sample()
            await anyio.sleep(self.POLL_S)
