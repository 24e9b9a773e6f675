"""Node processes on a LAN of network namespaces (tests/lan/): one ``node_main.py`` per namespace
with real mDNS, driven over its stdin/stdout (the test process has no route into the namespaces).

Every node hosts the factory types ``echo`` and ``listener`` of ``node_main``; with fixed node ids,
placement of the keys below is the same in every run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from support.netns import Network
from support.procs import NodeProcess, NodeProcesses
from support.waiting import wait_until

FACTORIES = ("echo", "listener")
AGENT_TYPES = sorted(FACTORIES)
# Enough keys that placement gives every node some, with the fixed node ids the tests use.
KEYS = [f"k{i}" for i in range(24)]
# Bound on one RPC inside a node.
CALL_TIMEOUT_S = 10.0
# Bound on publishes reaching their subscribers.
DELIVERY_TIMEOUT_S = 15.0


@dataclass
class Lan:
    """The namespaces of one test and the node processes started in them."""

    network: Network
    procs: NodeProcesses
    mesh: str
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    async def start(
        self,
        name: str,
        index: int,
        *,
        mesh: str | None = None,
        host: str | None = None,
        mdns_interfaces: str | None = None,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        """Start node ``name`` (node id ``lan-<name>``) in namespace ``index``, bound to its IPv4
        address unless ``host`` says otherwise, with mDNS discovery and no seeds."""
        namespace = self.network[index]
        host = host or namespace.ipv4 or "127.0.0.1"
        args = ["--discovery", "mdns", "--mesh", mesh or self.mesh, "--host", host]
        if mdns_interfaces is not None:
            args += ["--mdns-interfaces", mdns_interfaces]
        proc = await self.procs.start(
            name,
            node_id=f"lan-{name}",
            factories=FACTORIES,
            extra_args=args,
            netns=namespace.name,
            env=env,
            control=True,
        )
        self.nodes[name] = proc
        return proc

    async def peers(self, proc: NodeProcess) -> dict[str, dict[str, Any]]:
        """``proc``'s live peers by node id."""
        return {p["node_id"]: p for p in await proc.request("peers")}

    async def see_each_other(self, procs: Sequence[NodeProcess]) -> bool:
        """Whether each of ``procs`` sees exactly the others, with their agent types."""
        for proc in procs:
            peers = await self.peers(proc)
            expected = {p.node_id for p in procs if p is not proc}
            if set(peers) != expected or any(p["agent_types"] != AGENT_TYPES for p in peers.values()):
                return False
        return True

    async def views(self) -> str:
        """Every running node's view, for failure messages."""
        lines = []
        for name, proc in self.nodes.items():
            if proc.popen.poll() is None:
                try:
                    peers = await self.peers(proc)
                except Exception as exc:  # a diagnostic must not hide the failure
                    lines.append(f"{name}: <{exc}>")
                    continue
                lines.append(
                    f"{name}: " + ", ".join(f"{p['name']}#{p['incarnation']}/{p['status']}" for p in peers.values())
                )
        return "\n".join(lines)


async def exercise(origins: Sequence[NodeProcess], expected_names: set[str], tag: str) -> None:
    """Every node in ``origins`` calls every key and publishes to every key; asserts that every call
    is answered, that the keys are spread over exactly ``expected_names``, and that every publish
    reaches its subscriber exactly once (on a node of ``expected_names``)."""
    for origin in origins:
        answers = await origin.request("call_each", message="whoami", keys=KEYS, timeout=CALL_TIMEOUT_S)
        failures = [a for a in answers if a not in expected_names]
        assert not failures, f"calls from {origin.name} failed or reached a wrong node: {failures}"
        assert set(answers) == expected_names, f"keys answered from {origin.name} by {Counter(answers)}"
    for origin in origins:
        await origin.request("publish_each", keys=KEYS, text=f"{tag}-{origin.name}")
    wanted = {key: {f"{tag}-{o.name}-{key}" for o in origins} for key in KEYS}
    reader = origins[0]

    async def delivered() -> set[str] | None:
        seen = await reader.request("call_each", message="seen", keys=KEYS, timeout=CALL_TIMEOUT_S)
        holders = set()
        for key, result in zip(KEYS, seen, strict=True):
            assert isinstance(result, dict), f"asking listener/{key} what it saw failed: {result}"
            texts = Counter(t for t in result["texts"] if t.startswith(f"{tag}-"))
            assert all(n == 1 for n in texts.values()), f"listener/{key} got duplicates: {texts}"
            if set(texts) != wanted[key]:
                return None
            holders.add(result["node"])
        return holders

    holders = await wait_until(delivered, DELIVERY_TIMEOUT_S, what=f"every {tag} publish delivered", interval_s=0.1)
    assert holders == expected_names, f"listeners ran on {holders}, expected {expected_names}"
