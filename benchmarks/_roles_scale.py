"""A process holding several MeshNodes of a scale run, all on one event loop.

Node ``i`` of the mesh hosts agent type ``t<i>`` with a subscription of topic ``topic<i>``, so a
node "has every route" when its routing table holds N agent types and N subscriptions. Protocol:

- ``ready`` once imported; on ``seed`` (the first process only) it starts node 0 and reports its
  address as ``seed``;
- on ``start`` it creates and starts its other nodes at once, joining through the seed, and
  reports ``converged`` when every node of this process has every route: ``last_start`` (the
  monotonic time of its last ``start()`` call) and ``at`` (when the last of them had every route);
- on ``measure`` it waits ``settle_s``, then reads every node's transport counters over
  ``window_s`` and reports bytes and frames sent per second, per node (``rest``).
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import mesh

from ._procs import CommandReader, say

# A node of a 64-node mesh has a ROUTER and 63 DEALERs, each with its TCP connections and libzmq's
# signalling descriptors: a process of 16 such nodes needs a few thousand descriptors.
WANT_FDS = 65_536
CONVERGE_TIMEOUT_S = 120.0


class Idle(mesh.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("never called: it only gives its node routes to advertise")

    @mesh.message_handler
    async def on_text(self, message: str, ctx: mesh.MessageContext) -> None:
        pass


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = WANT_FDS if hard == resource.RLIM_INFINITY else min(WANT_FDS, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class _Watch:
    """Notes when a node first holds every route (its view listener runs on every view change)."""

    def __init__(self, node: mesh.MeshNode, total: int, done: asyncio.Event, pending: set[str]) -> None:
        self.node, self.total, self.done, self.pending = node, total, done, pending
        self.at: float | None = None

    def complete(self) -> bool:
        table = self.node.routing_table
        return len(table.type_hosts) >= self.total and len(table.subscription_holders) >= self.total

    def __call__(self) -> None:
        if self.at is None and self.complete():
            self.at = time.monotonic()
            self.pending.discard(self.node.node_id)
            if not self.pending:
                self.done.set()


async def _make(index: int, config: dict[str, Any], seeds: list[str]) -> mesh.MeshNode:
    node = mesh.MeshNode(name=f"n{index}", mesh=config["mesh"], discovery="none", seeds=seeds)
    await Idle.register(node, f"t{index}", Idle)
    await node.add_subscription(mesh.TypeSubscription(f"topic{index}", f"t{index}"))
    return node


async def group(config: dict[str, Any]) -> None:
    _raise_fd_limit()
    commands = CommandReader()
    first, count, total = config["first"], config["count"], config["total"]
    nodes: list[mesh.MeshNode] = []
    say("ready")
    try:
        command = await commands.next()
        if command["cmd"] == "seed":
            seed_node = await _make(first, config, [])
            await seed_node.start()
            nodes.append(seed_node)
            say("seed", address=seed_node.address)
            command = await commands.next("start")
        seed = command["seed"]
        nodes += [await _make(i, config, [seed]) for i in range(first + len(nodes), first + count)]
        done = asyncio.Event()
        pending = {n.node_id for n in nodes}
        watches = [_Watch(node, total, done, pending) for node in nodes]
        for node, watch in zip(nodes, watches, strict=True):
            node.add_view_listener(watch)
        starts: list[asyncio.Task[None]] = []
        last_start = time.monotonic()
        for node in nodes:
            if not node.running:
                last_start = time.monotonic()
                starts.append(node.start())
        await asyncio.gather(*starts)
        for watch in watches:
            watch()  # a node whose table was complete before its listener was added
        await asyncio.wait_for(done.wait(), CONVERGE_TIMEOUT_S)
        say("converged", last_start=last_start, at=max(w.at for w in watches if w.at is not None))

        measure = await commands.next("measure")
        await asyncio.sleep(measure["settle_s"])  # a measurement window, not synchronisation
        before = [(n.statistics()["bytes_out"], n.statistics()["frames_out"]) for n in nodes]
        started = time.monotonic()
        await asyncio.sleep(measure["window_s"])
        after = [(n.statistics()["bytes_out"], n.statistics()["frames_out"]) for n in nodes]
        elapsed = time.monotonic() - started
        incomplete = [n.name for n, w in zip(nodes, watches, strict=True) if not w.complete()]
        say(
            "rest",
            bytes_per_s=[(a[0] - b[0]) / elapsed for a, b in zip(after, before, strict=True)],
            frames_per_s=[(a[1] - b[1]) / elapsed for a, b in zip(after, before, strict=True)],
            incomplete=incomplete,
            peers=[len(n.peers) for n in nodes],
        )
        await commands.next("stop")
    finally:
        await asyncio.gather(*(n.close() for n in nodes if n.running), return_exceptions=True)


ROLES = {"group": group}
