"""What ``node_main.py`` adds for the hardening tests (tests/hardening/): options, a probe agent and a
slow sink.

Options (all optional): ``--config JSON`` (``MeshConfig`` fields; ``"membership"`` holds
``MembershipConfig`` fields), ``--tracemalloc`` (trace Python allocations from before the node
starts), ``--probe`` (pin the agent ``probe/<name>`` on this node), ``--factory-sink`` (host the
factory type ``sink``), ``--sink-delay-s S`` (each sink handler then holds the one sink lock for S
seconds, awaiting), ``--sink-cpu-s S`` (each sink handler blocks the event loop for S seconds, as
CPU-bound work does) and ``--sink-gate-closed`` (sink handlers wait until the process gets SIGUSR1:
a signal, because a node whose handlers all wait cannot start the handler of a call that would
open the gate).

The probe reports the node's state (incarnation, peers with their incarnations, live agent ids,
counters) and its memory, and misbehaves on request: it raises, blocks the event loop, or never
returns. The sink subscribes to the topic type ``flood`` and records, per publisher, the sequence
numbers of the ``FloodItem`` it receives in the order their handlers start.

The tests import the message classes from here: the wire names a dataclass by its class name.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import signal
import time
import tracemalloc
from array import array
from dataclasses import dataclass, field
from typing import Any

from discovery import MembershipConfig
from mesh import AgentId, MeshConfig, MeshNode, MessageContext, RoutedAgent, event, rpc, type_subscription

PROBE_TYPE = "probe"
SINK_TYPE = "sink"
SINK_TOPIC = "flood"


@dataclass
class GetState:
    pass


@dataclass
class NodeState:
    """A node's view of itself and the mesh."""

    name: str
    node_id: str
    incarnation: int
    peers: dict[str, list[Any]] = field(default_factory=dict)  # node id -> [incarnation, status]
    agents: list[str] = field(default_factory=list)  # live agent ids on this node, "type/key"
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class GetMemory:
    collect: bool = True  # gc.collect() first, so that garbage is not counted as live
    reset_peak: bool = False  # start a new peak after reading this one
    snapshot: bool = False  # keep a tracemalloc snapshot to compare later ones with
    top: int = 0  # report this many lines that grew most since the kept snapshot


@dataclass
class Memory:
    traced: int  # bytes of live Python allocations (0 without --tracemalloc)
    traced_peak: int  # their peak since the start or the last reset
    rss: int  # resident set size now, bytes
    max_rss: int  # peak resident set size of the process, bytes
    top: list[str] = field(default_factory=list)  # allocation sites that grew most (GetMemory.top)


@dataclass
class Block:
    """Block the node's event loop for ``seconds`` (time.sleep inside the handler)."""

    seconds: float


@dataclass
class Fail:
    """Raise ``ValueError(text)``, or, with ``unregistered``, an exception type the caller does not know."""

    text: str
    unregistered: bool = False


@dataclass
class Stall:
    """Never return; count whether the handler's cancellation token gets cancelled."""


@dataclass
class GetStallStatus:
    pass


@dataclass
class StallStatus:
    started: int
    running: int
    cancelled: int


@dataclass
class FloodItem:
    publisher: str
    seq: int
    pad: str = ""


@dataclass
class GetSinkLog:
    publisher: str


@dataclass
class SinkLog:
    node: str
    seqs: list[int] = field(default_factory=list)


REPLY_TYPES = (NodeState, Memory, StallStatus, SinkLog)


class ProbeFailure(Exception):
    """Raised by the probe on ``Fail(unregistered=True)``: callers have not registered this type."""


class SinkState:
    """The sink's records and knobs (one node per process, so one per process)."""

    def __init__(self) -> None:
        self.seqs: dict[str, array[int]] = {}
        self.delay_s = 0.0
        self.cpu_s = 0.0
        self.gate_open = True
        self._gate: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def gate(self) -> asyncio.Event:
        if self._gate is None:
            self._gate = asyncio.Event()
            if self.gate_open:
                self._gate.set()
        return self._gate

    def open_gate(self) -> None:
        self.gate_open = True
        self.gate.set()

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock


SINK = SinkState()


def _node(agent: RoutedAgent) -> MeshNode:
    runtime: Any = agent.runtime
    assert isinstance(runtime, MeshNode)
    return runtime


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


class Probe(RoutedAgent):
    """Pinned on one node (``probe/<node name>``): see the module docstring."""

    def __init__(self) -> None:
        super().__init__("reports on its node and misbehaves on request")
        self._stall = StallStatus(0, 0, 0)
        self._snapshot: tracemalloc.Snapshot | None = None

    @rpc
    async def state(self, message: GetState, ctx: MessageContext) -> NodeState:
        node = _node(self)
        # Test support: the node has no public listing of its live agents.
        agents = sorted(f"{a.type}/{a.key}" for a in node._agents.instances)
        stats = {k: v for k, v in node.statistics().items() if isinstance(v, int)}
        peers = {p.node_id: [p.incarnation, p.status] for p in node.peers}
        return NodeState(node.name, node.node_id, node.incarnation, peers, agents, stats)

    @rpc
    async def memory(self, message: GetMemory, ctx: MessageContext) -> Memory:
        if message.collect:
            gc.collect()
        traced, peak = tracemalloc.get_traced_memory() if tracemalloc.is_tracing() else (0, 0)
        if message.reset_peak and tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        top: list[str] = []
        if tracemalloc.is_tracing() and (message.top or message.snapshot):
            snapshot = tracemalloc.take_snapshot()
            if message.top and self._snapshot is not None:
                top = [str(stat) for stat in snapshot.compare_to(self._snapshot, "lineno")[: message.top]]
            if message.snapshot:
                self._snapshot = snapshot
        return Memory(traced, peak, _rss_bytes(), max_rss, top)

    @rpc
    async def block(self, message: Block, ctx: MessageContext) -> float:
        started = time.monotonic()
        # Deliberately blocks the event loop: this is the fault under test.
        time.sleep(message.seconds)  # noqa: ASYNC251
        return time.monotonic() - started

    @rpc
    async def fail(self, message: Fail, ctx: MessageContext) -> None:
        if message.unregistered:
            raise ProbeFailure(message.text)
        raise ValueError(message.text)

    @rpc
    async def stall(self, message: Stall, ctx: MessageContext) -> None:
        status = self._stall
        status.started += 1
        status.running += 1

        def cancelled() -> None:
            status.cancelled += 1

        ctx.cancellation_token.add_callback(cancelled)
        try:
            await asyncio.Event().wait()  # never set: this handler never returns on its own
        finally:
            status.running -= 1

    @rpc
    async def stall_status(self, message: GetStallStatus, ctx: MessageContext) -> StallStatus:
        return StallStatus(self._stall.started, self._stall.running, self._stall.cancelled)

    @rpc
    async def sink_log(self, message: GetSinkLog, ctx: MessageContext) -> SinkLog:
        return SinkLog(_node(self).name, list(SINK.seqs.get(message.publisher, ())))


@type_subscription(SINK_TOPIC)
class Sink(RoutedAgent):
    """A deliberately slow subscriber: see the module docstring."""

    def __init__(self) -> None:
        super().__init__("a slow subscriber")

    @event
    async def on_item(self, message: FloodItem, ctx: MessageContext) -> None:
        seqs = SINK.seqs.get(message.publisher)
        if seqs is None:
            seqs = SINK.seqs[message.publisher] = array("q")
        seqs.append(message.seq)  # before any await: the order in which handlers start
        if not SINK.gate_open:
            await SINK.gate.wait()
        if SINK.cpu_s:
            time.sleep(SINK.cpu_s)  # noqa: ASYNC251 - deliberately blocks the loop: a CPU-bound consumer
        if SINK.delay_s:
            async with SINK.lock:
                await asyncio.sleep(SINK.delay_s)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardening tests (support/hardening_agents.py)")
    group.add_argument("--config", default=None, help="MeshConfig fields as JSON ('membership': MembershipConfig)")
    group.add_argument("--tracemalloc", action="store_true", help="trace Python allocations")
    group.add_argument("--probe", action="store_true", help="pin the agent probe/<name> here")
    group.add_argument("--factory-sink", action="store_true", help="host the factory type sink")
    group.add_argument("--sink-delay-s", type=float, default=0.0, help="each sink handler holds the lock this long")
    group.add_argument("--sink-cpu-s", type=float, default=0.0, help="each sink handler blocks the loop this long")
    group.add_argument("--sink-gate-closed", action="store_true", help="sink handlers wait for SIGUSR1")


def before_start(args: argparse.Namespace) -> None:
    if args.tracemalloc:
        tracemalloc.start()
    SINK.delay_s = args.sink_delay_s
    SINK.cpu_s = args.sink_cpu_s
    SINK.gate_open = not args.sink_gate_closed


def config(args: argparse.Namespace, base: MeshConfig) -> MeshConfig:
    """``base`` with the fields of ``--config`` applied."""
    if args.config is None:
        return base
    fields = json.loads(args.config)
    membership = fields.pop("membership", None)
    if membership is not None:
        fields["membership"] = MembershipConfig(**membership)
    join_timeout = {"join_timeout_s": base.join_timeout_s}
    return MeshConfig(**{**join_timeout, **fields})


async def register(node: MeshNode, args: argparse.Namespace) -> None:
    if args.probe:
        await node.register_agent_instance(Probe(), AgentId(PROBE_TYPE, node.name))
    if args.factory_sink:
        await Sink.register(node, SINK_TYPE, Sink)
    if args.sink_gate_closed:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, SINK.open_gate)
