"""One-way delivery across processes (parent side): who is started, in which order, and the clock.

Used by the cross-process publish scenario and by fan-out. Every system runs the same protocol
(see ``_child.py``): the sender sends ``warm`` untimed messages and every sink reports them
received; then the sender notes the time and sends ``n`` messages; the clock stops when the last
sink has received its last one. Throughput is deliveries / (last delivery - first send).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ._procs import READY_TIMEOUT_S, Child, Children, expect_all

TOPIC = "bench"
SOURCE = "bench"
# Far above any plausible run: the slowest system delivers thousands per second. Only a hang hits it.
BASE_TIMEOUT_S = 60.0
SLOWEST_RATE_PER_S = 500.0


def warmup_size(n: int) -> int:
    """Untimed messages before the clock starts: a tenth of the run, at least 100."""
    return max(100, n // 10)


def delivery_timeout_s(deliveries: int) -> float:
    return BASE_TIMEOUT_S + deliveries / SLOWEST_RATE_PER_S


@dataclass(frozen=True)
class Layout:
    """Which agent types (each one subscriber of the topic) each sink process hosts."""

    sinks: tuple[tuple[str, ...], ...]

    @classmethod
    def spread(cls, subscribers: int, processes: int) -> Layout:
        """``subscribers`` agent types dealt round-robin over ``processes`` sink processes."""
        hosted: list[list[str]] = [[] for _ in range(processes)]
        for i in range(subscribers):
            hosted[i % processes].append(f"sub{i}")
        return cls(tuple(tuple(types) for types in hosted))

    @property
    def subscribers(self) -> int:
        return sum(len(types) for types in self.sinks)


def _sink_config(types: tuple[str, ...], warm: int, n: int) -> dict[str, Any]:
    return {"types": list(types), "topic": TOPIC, "source": SOURCE, "warm": warm, "total": warm + n}


def _measure(sender: Child, sinks: list[Child], n: int, warm: int, deliveries: int) -> float:
    """Run the protocol with started, ready processes; delivered messages per second."""
    sender.send("warm", n=warm)
    expect_all(sinks, "warm", delivery_timeout_s(deliveries // 10))
    sender.send("go", n=n)
    sent = sender.expect("sent", delivery_timeout_s(deliveries))
    done = expect_all(sinks, "done", delivery_timeout_s(deliveries))
    return float(deliveries / (max(d["at"] for d in done) - sent["start"]))


def run_mesh(layout: Layout, n: int, *, secret_key_file: str | None = None) -> float:
    """agentmesh processes; with ``secret_key_file`` (one shared mesh key) every link is CURVE."""
    warm = warmup_size(n)
    common: dict[str, Any] = {"mesh": f"bench-{uuid.uuid4().hex[:8]}", "secret_key_file": secret_key_file}
    with Children() as kids:
        first = kids.spawn("mesh.sink", **common, name="sink0", **_sink_config(layout.sinks[0], warm, n))
        others = [
            kids.prespawn("mesh.sink", **common, name=f"sink{i}", **_sink_config(types, warm, n))
            for i, types in enumerate(layout.sinks[1:], start=1)
        ]
        sender = kids.prespawn("mesh.publisher", **common, peers=len(layout.sinks), topic=TOPIC, source=SOURCE)
        seed = first.expect("ready", READY_TIMEOUT_S)["address"]
        for child in [*others, sender]:
            child.send("config", seed=seed)
        expect_all([*others, sender], "ready", READY_TIMEOUT_S)
        sinks = [first, *others]
        return _measure(sender, _counting(sinks, layout), n, warm, n * layout.subscribers)


def run_autogen(layout: Layout, n: int) -> float:
    warm = warmup_size(n)
    with Children() as kids:
        host = kids.spawn("autogen.host")
        sinks = [kids.prespawn("autogen.sink", **_sink_config(types, warm, n)) for types in layout.sinks]
        sender = kids.prespawn("autogen.publisher", topic=TOPIC, source=SOURCE)
        address = host.expect("ready", READY_TIMEOUT_S)["address"]
        for child in [*sinks, sender]:
            child.send("config", host=address)
        expect_all([*sinks, sender], "ready", READY_TIMEOUT_S)
        return _measure(sender, _counting(sinks, layout), n, warm, n * layout.subscribers)


def run_zmq(mode: str, n: int) -> float:
    warm = warmup_size(n)
    with Children() as kids:
        sink = kids.spawn("zmq.sink", mode=mode, warm=warm, total=warm + n)
        sender = kids.prespawn("zmq.sender", mode=mode)
        sender.send("config", address=sink.expect("ready", READY_TIMEOUT_S)["address"])
        sender.expect("ready", READY_TIMEOUT_S)
        return _measure(sender, [sink], n, warm, n)


def _counting(sinks: list[Child], layout: Layout) -> list[Child]:
    """The sink processes that host at least one subscriber (the others report nothing to wait for)."""
    return [child for child, types in zip(sinks, layout.sinks, strict=True) if types]
