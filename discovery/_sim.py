"""A deterministic simulator of many membership state machines on a fake clock and network.

Used by the tests and by the benchmark that simulates a thousand nodes. Around each
:class:`SwimState` it does what the real drivers do (``_membership.py``; ``mesh/_link.py`` and
``mesh/_transport.py`` for the wire): a ``Send`` goes to the endpoint of the member record the
sender holds, addressed to that incarnation, and a non-handshake frame for another incarnation is
dropped; a receiver passes ``sender=None`` when the sender is not one of its live members and then
hears only handshake codes; a non-handshake frame from a node it holds gone is dropped and answered
with a DEAD notice (at most once a second); a node told it was declared dead rejoins at once under
the next incarnation. Messages go through msgpack (the packed size feeds the byte counters); each
pair of nodes has one ordered channel.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from ._config import MembershipConfig
from ._record import MemberRecord, is_valid_endpoint, is_valid_node_id
from ._swim import ACK, DEAD, HANDSHAKE_CODES, LEAVE, SUSPECT, Event, Output, Send, SwimState

PROTOCOL = (1, 0)
TELL_DEAD_INTERVAL_S = 1.0  # as mesh/_link.py: a node held dead that still talks is told this often
CONVERGENCE_STEP_S = 0.001  # how often run_until_converged looks at the views (simulated time)
_TICK, _DELIVER, _REJOIN = 0, 1, 2
# Messages after which next_deadline() may have moved (see _deliver).
_RESCHEDULING_CODES = frozenset({ACK, SUSPECT, DEAD, LEAVE})


class LogEntry(NamedTuple):
    """One membership event: ``observer`` saw ``kind`` about ``subject`` (at that incarnation)."""

    time: float
    observer: str
    kind: str
    subject: str | None
    incarnation: int | None


@dataclass(eq=False)
class SimNode:
    """One simulated node: its state machine, its controls and its counters."""

    node_id: str
    endpoint: str
    state: SwimState
    seeds: list[str]
    running: bool = True  # False once killed or left: no ticks, nothing delivered to it
    crashed: bool = False  # killed: what it still had in flight is lost as well
    stalled_until: float = 0.0
    tick_at: float | None = None
    rejoin_pending: bool = False
    sent_messages: int = 0
    sent_bytes: int = 0
    sent_by_code: Counter[int] = field(default_factory=Counter)
    bad_messages: int = 0
    told_dead: dict[str, float] = field(default_factory=dict)


# (sender, its incarnation, target incarnation, handshake, message)
_Frame = tuple[SimNode, int, int, bool, Any]


class SimulatedMesh:
    """N membership state machines, a fake clock, and a network with latency, loss and stalls.

    Args:
        config: timings every node uses.
        seed: seeds every random choice (probe orders, jitter), so that a run is reproducible.
        latency_s: one-way delay of every message; ``jitter_s`` adds up to that much at random.
        keep_log: record every membership event in :attr:`log`.
    """

    def __init__(
        self,
        config: MembershipConfig,
        seed: int,
        *,
        latency_s: float = 0.0005,
        jitter_s: float = 0.0,
        mesh: str = "sim",
        keep_log: bool = True,
    ) -> None:
        self.config, self.mesh, self.keep_log = config, mesh, keep_log
        self.rng = random.Random(seed)
        self.latency_s, self.jitter_s = latency_s, jitter_s
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.log: list[LogEntry] = []
        self.dropped = 0
        self._by_endpoint: dict[str, SimNode] = {}
        self._queue: list[tuple[float, int, int, SimNode, _Frame | None]] = []
        self._seq = 0
        self._partitions: list[tuple[frozenset[str], frozenset[str]]] = []
        self._last_arrival: dict[tuple[str, str], float] = {}
        self._changed = True

    @staticmethod
    def endpoint_of(node_id: str) -> str:
        """The endpoint of the node ``node_id`` (a well-formed one: records with others are refused)."""
        return f"tcp://{node_id}.sim:1"

    # -- controls ---------------------------------------------------------------------------------

    def add_node(self, name: str | None = None, *, mesh: str | None = None, seeds: Iterable[str] | None = None) -> str:
        """Start a node (its node id is ``name``) joining through ``seeds``, by default the first node."""
        node_id = name if name is not None else f"n{len(self.nodes)}"
        endpoint = self.endpoint_of(node_id)
        if not is_valid_node_id(node_id) or not is_valid_endpoint(endpoint) or node_id in self.nodes:
            raise ValueError(f"node id {node_id!r} is invalid (it must also be a DNS label) or taken")
        if seeds is None:
            seeds = [next(iter(self.nodes.values())).endpoint] if self.nodes else []
        record = MemberRecord(node_id, 1, 0, endpoint, node_id, mesh or self.mesh, PROTOCOL)
        state = SwimState(record, self.config, random.Random(self.rng.getrandbits(64)))
        node = SimNode(node_id, endpoint, state, [*seeds])
        self.nodes[node_id] = self._by_endpoint[endpoint] = node
        self._changed = True
        self._act(node, node.state.start_join(node.seeds, self.now))
        return node_id

    def kill(self, node_id: str) -> None:
        """Crash a node: it stops, and every message to or from it is lost from now on."""
        node = self.nodes[node_id]
        node.running, node.crashed, node.tick_at, self._changed = False, True, None, True

    def leave(self, node_id: str) -> None:
        """Graceful leave: the node announces it, then stops."""
        node = self.nodes[node_id]
        self._act(node, node.state.leave(self.now))
        node.running, node.tick_at, self._changed = False, None, True

    def set_metadata(self, node_id: str, metadata: bytes) -> None:
        node = self.nodes[node_id]
        self._act(node, node.state.set_metadata(metadata, self.now))

    def rejoin(self, node_id: str, incarnation: int | None = None) -> None:
        """Come back under ``incarnation`` (default: the next one) through the node's seeds."""
        node = self.nodes[node_id]
        incarnation = node.state.me.incarnation + 1 if incarnation is None else incarnation
        self._changed = True
        self._act(node, node.state.rejoin(incarnation, node.seeds, self.now))

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Lose every message between a node of ``side_a`` and one of ``side_b`` until :meth:`heal`."""
        self._partitions.append((frozenset(side_a), frozenset(side_b)))

    def heal(self) -> None:
        self._partitions.clear()

    def stall(self, node_id: str, duration_s: float) -> None:
        """Freeze a node's event loop: its ticks and inbound messages wait until the stall ends."""
        node = self.nodes[node_id]
        node.stalled_until = max(node.stalled_until, self.now + duration_s)

    # -- running ----------------------------------------------------------------------------------

    def run_for(self, duration_s: float) -> None:
        self.run_until(self.now + duration_s)

    def run_until(self, t: float) -> None:
        """Carry out everything due up to simulated time ``t``."""
        queue = self._queue
        while queue and queue[0][0] <= t:
            at, seq, kind, node, frame = heapq.heappop(queue)
            self.now = at
            if kind == _DELIVER:
                assert frame is not None
                self._deliver(node, frame, seq)
            elif kind == _TICK:
                if at != node.tick_at or not node.running:
                    continue  # superseded by a later schedule
                if at < node.stalled_until:
                    node.tick_at = node.stalled_until
                    heapq.heappush(queue, (node.stalled_until, seq, kind, node, None))
                    continue
                node.tick_at = None
                self._act(node, node.state.tick(at))
            else:
                node.rejoin_pending = False
                if node.running and not node.state.left:
                    self.rejoin(node.node_id)
        self.now = max(self.now, t)

    def converged(self) -> bool:
        """Every running node sees exactly the running nodes (at their current incarnations)."""
        return self._divergence() is None

    def run_until_converged(self, timeout_s: float) -> float:
        """Run until :meth:`converged` and return the time; TimeoutError after ``timeout_s``."""
        deadline = self.now + timeout_s
        while True:
            if self._changed:
                self._changed = False
                if self.converged():
                    return self.now
            if self.now >= deadline:
                raise TimeoutError(f"no convergence within {timeout_s} s: {self._divergence()}")
            self.run_until(min(self.now + CONVERGENCE_STEP_S, deadline))

    def alive_view(self, node_id: str) -> set[str]:
        """Node ids that ``node_id`` holds alive or suspect."""
        return {r.node_id for r in self.nodes[node_id].state.alive()}

    def _divergence(self) -> str | None:
        live = [n for n in self.nodes.values() if n.running]
        expected = {(n.node_id, n.state.me.incarnation) for n in live}
        for node in live:
            view = {(r.node_id, r.incarnation) for r in node.state.alive()}
            view.add((node.node_id, node.state.me.incarnation))
            if view != expected:
                return f"{node.node_id} misses {sorted(expected - view)}, has extra {sorted(view - expected)}"
        return None

    # -- the driver -------------------------------------------------------------------------------

    def _act(self, node: SimNode, outputs: list[Output], reschedule: bool = True) -> None:
        packed_for: Any = None
        packed: tuple[int, Any] = (0, None)
        for out in outputs:
            if isinstance(out, Event):
                self._event(node, out)
                continue
            if out.message is not packed_for:  # a broadcast shares one message: pack it once
                packed_for, raw = out.message, msgpack.packb(out.message)
                packed = (len(raw), msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True))
            if not isinstance(out, Send):
                self._send(node, out.endpoint, 0, True, packed)
            elif (member := node.state.members.get(out.node_id)) is not None:
                rec, handshake = member.record, out.message[0] in HANDSHAKE_CODES
                self._send(node, rec.endpoint, rec.incarnation, handshake, packed)
        if node.running and (reschedule or node.tick_at is None):
            when = max(node.state.next_deadline(), self.now)
            if when != node.tick_at:
                node.tick_at = when
                self._push(when, _TICK, node, None)

    def _event(self, node: SimNode, event: Event) -> None:
        rec = event.record
        if self.keep_log:
            subject, incarnation = (rec.node_id, rec.incarnation) if rec is not None else (None, None)
            self.log.append(LogEntry(self.now, node.node_id, event.kind, subject, incarnation))
        if event.kind in ("joined", "dead", "left"):
            self._changed = True
        elif event.kind == "self_dead" and not node.rejoin_pending:
            node.rejoin_pending = True  # it rejoins from its event loop right after (MeshNode._declared_dead)
            self._push(self.now, _REJOIN, node, None)

    def _send(self, src: SimNode, endpoint: str, target_incarnation: int, handshake: bool, packed: Any) -> None:
        size, message = packed
        src.sent_messages += 1
        src.sent_bytes += size
        src.sent_by_code[message[0]] += 1
        dst = self._by_endpoint.get(endpoint)
        if dst is None:
            self.dropped += 1
            return
        at = self.now + self.latency_s
        if self.jitter_s:
            pair = (src.node_id, dst.node_id)
            at = max(at + self.rng.uniform(0.0, self.jitter_s), self._last_arrival.get(pair, 0.0))
            self._last_arrival[pair] = at
        self._push(at, _DELIVER, dst, (src, src.state.me.incarnation, target_incarnation, handshake, message))

    def _push(self, at: float, kind: int, node: SimNode, frame: _Frame | None) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, node, frame))

    def _cut(self, a: str, b: str) -> bool:
        return any((a in x and b in y) or (a in y and b in x) for x, y in self._partitions)

    def _deliver(self, dst: SimNode, frame: _Frame, seq: int) -> None:
        src, src_incarnation, target_incarnation, handshake, message = frame
        if not dst.running or src.crashed or (self._partitions and self._cut(src.node_id, dst.node_id)):
            self.dropped += 1
            return
        if self.now < dst.stalled_until:
            heapq.heappush(self._queue, (dst.stalled_until, seq, _DELIVER, dst, frame))
            return
        state = dst.state
        if not handshake and target_incarnation != state.me.incarnation:
            self.dropped += 1  # the transport drops data for another incarnation
            return
        member = state.members.get(src.node_id)
        is_peer = member is not None and not member.status.gone
        sender: str | None = src.node_id
        if not (is_peer and member is not None and member.record.incarnation == src_incarnation):
            if not handshake:
                self.dropped += 1  # dropped before decoding: the sender never joined, or is gone
                status = state.status_of(src.node_id, src_incarnation)
                if status is not None and status.gone:
                    self._tell_dead(dst, src.node_id, src_incarnation)
                return
            if is_peer and member is not None and member.record.incarnation > src_incarnation:
                self.dropped += 1  # an older incarnation of a member: its claims are stale
                return
            sender = None  # a stranger (or a newer incarnation of a member): as mesh/_link.py
        try:
            outputs = state.receive(sender, message, self.now)
        except ValueError:
            dst.bad_messages += 1
            return
        # next_deadline() costs O(members), which a join storm would pay per message: ask again
        # only after messages that can move it (a suspicion brings it forward, an ack or a verdict
        # puts it back). After the others the planned tick stays, and at worst finds nothing due.
        suspicion = any(isinstance(o, Event) and o.kind == "suspect" for o in outputs)
        self._act(dst, outputs, suspicion or message[0] in _RESCHEDULING_CODES)

    def _tell_dead(self, node: SimNode, node_id: str, incarnation: int) -> None:
        last = node.told_dead.get(node_id)
        if last is not None and self.now - last < TELL_DEAD_INTERVAL_S:
            return
        node.told_dead[node_id] = self.now
        record = node.state.members[node_id].record
        if record.incarnation != incarnation:
            return  # as mesh/_link.py: only the incarnation that was declared dead is told
        message = node.state.dead_notice(record)
        self._send(node, record.endpoint, incarnation, True, (len(msgpack.packb(message)), message))
