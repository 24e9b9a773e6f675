"""One agent type on three nodes: placement spreads its keys over them, and when a node leaves
gracefully its keys move to the others with their state (save_state on the old owner, load_state
on the new one), so every counter keeps counting.

Run: python examples/scale_out.py
"""

import asyncio
from collections.abc import Mapping
from typing import Any

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, rpc
from mesh.testing import wait_for

KEYS = ["alice", "bob", "carol", "dave", "erin", "frank"]


class Counter(RoutedAgent):
    """Counts the calls for its key (one Counter per key, on the node that owns the key)."""

    def __init__(self) -> None:
        super().__init__("counts calls")
        self.count = 0

    @rpc
    async def increment(self, message: str, ctx: MessageContext) -> str:
        self.count += 1
        node: Any = self.runtime
        return f"{self.id.key:<6} on {node.name}: count {self.count}"

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]


async def main() -> None:
    # Fixed node ids: placement (rendezvous hashing of the key over the node ids) is the same in every run.
    a = MeshNode(name="node-a", node_id="node-a", discovery="none")
    await a.start()
    b = MeshNode(name="node-b", node_id="node-b", discovery="none", seeds=[a.address])
    c = MeshNode(name="node-c", node_id="node-c", discovery="none", seeds=[a.address])
    for node in (b, c):
        await node.start()
    for node in (a, b, c):
        await Counter.register(node, "counter", Counter)
    print("three nodes host the type counter:")
    for key in KEYS:
        print("  " + await a.send_message("+1", AgentId("counter", key)))
    await b.stop()  # graceful: node-b hands its counters over, then leaves
    await wait_for(lambda: len(a.peers) == 1, what="node-a seeing node-b leave")
    print("node-b stopped; its keys moved to node-a and node-c with their counts:")
    for key in KEYS:
        print("  " + await a.send_message("+1", AgentId("counter", key)))
    await c.stop()
    # Before node-a stops: else it may still offer its counters to node-c, which is leaving.
    await wait_for(lambda: not a.peers, what="node-a seeing node-c leave")
    await a.stop()


if __name__ == "__main__":
    asyncio.run(main())
