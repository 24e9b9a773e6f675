"""Several mesh nodes in ONE process find each other with mDNS over loopback, then exchange an RPC
and a publish each way. For one-machine runs (and ``make demo``): run it inside a loopback-only
network namespace, never on a real network (DESIGN §4)::

    python tests/support/netns.py -- python tests/support/loopback_mesh.py --nodes 3 --mesh demo-1234

It prints one JSON line ``{"nodes", "discovery_s", "answered_by", "news_seen_on"}`` and exits 0, or
prints the failure on stderr and exits 1. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from mesh import AgentId, MeshNode, TopicId

# `support` when run as a script: after `mesh` is imported, so that tests/mesh cannot shadow it.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from support.node_main import NEWS_TOPIC, Echo, GetSeen, Listener, News, Seen, WhoAmI

# Bound on every node seeing every other one (mDNS announcement, then the join).
DISCOVERY_TIMEOUT_S = 15.0
# Bound on one RPC, and on a publish reaching its subscribers.
CALL_TIMEOUT_S = 10.0
KEYS = [f"k{i}" for i in range(24)]


async def run(n: int, mesh: str) -> dict[str, object]:
    # Fixed node ids: placement of the keys (HRW over node ids) is the same in every run.
    nodes = [
        MeshNode(name=f"loop{i}", node_id=f"loop{i}", mesh=mesh, host="127.0.0.1", discovery="mdns") for i in range(n)
    ]
    try:
        for node in nodes:
            await Echo.register(node, "echo", Echo)
            await Listener.register(node, "listener", Listener)
        for node in nodes:
            await node.start()
        started = time.monotonic()
        async with asyncio.timeout(DISCOVERY_TIMEOUT_S):
            await asyncio.gather(*(node.wait_for_peers(n - 1, timeout=DISCOVERY_TIMEOUT_S) for node in nodes))
        discovery_s = time.monotonic() - started
        first, last = nodes[0], nodes[-1]
        answered_by = sorted(
            {await first.send_message(WhoAmI(), AgentId("echo", key), timeout=CALL_TIMEOUT_S) for key in KEYS}
        )
        for key in KEYS:
            await last.publish_message(News(f"hello-{key}"), TopicId(NEWS_TOPIC, key))
        seen_on: set[str] = set()
        async with asyncio.timeout(CALL_TIMEOUT_S):
            for key in KEYS:  # wait until each key's listener got its news (bounded above)
                while True:
                    seen = await first.send_message(GetSeen(), AgentId("listener", key), timeout=CALL_TIMEOUT_S)
                    assert isinstance(seen, Seen)
                    if f"hello-{key}" in seen.texts:
                        seen_on.add(seen.node)
                        break
                    await asyncio.sleep(0.02)  # a publish is one-way: poll its effect
        return {"nodes": n, "discovery_s": round(discovery_s, 3), "answered_by": answered_by,
                "news_seen_on": sorted(seen_on)}  # fmt: skip
    finally:
        for node in reversed(nodes):
            await node.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--mesh", required=True, help="a mesh name of its own (random in tests)")
    args = parser.parse_args(argv)
    try:
        result = asyncio.run(run(args.nodes, args.mesh))
    except Exception as exc:
        print(f"loopback_mesh: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
