"""The membership protocol as a pure state machine: no sockets, no clock, no tasks.

Inputs are calls (``receive``, ``tick``, ``set_metadata``, ...) with the current time; outputs are
lists of actions for the driver to carry out. That keeps it testable with a fake clock and lets
the benchmarks simulate a thousand nodes.

What it does:
- joining: a node sends its record to seed endpoints and merges the full state a seed returns;
  the seed pushes the newcomer's record to everyone at once;
- changes (metadata, leave, suspicion, death) are pushed to every member at once; metadata
  updates are acknowledged so the node can wait until its peers see a registration;
- failure detection is SWIM: one direct probe per interval, indirect probes through other
  members when it times out, suspect before dead, refutation by the suspect; Lifeguard's local
  health scales this node's timeouts when it is itself slow, and a stall of this node's own loop
  postpones its verdicts instead of blaming its peers;
- anti-entropy at rest sends one hash of the membership view per interval to one random member;
  only on a mismatch do digests and the missing records follow.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ._config import MembershipConfig
from ._errors import RecordDecodeError
from ._record import MemberRecord, MemberStatus, is_valid_endpoint, is_valid_node_id

# Message codes. Messages are lists of msgpack-native values whose first item is the code.
JOIN = 1  # [JOIN, record, want_state]           handshake: a node joins (or introduces itself)
STATE = 2  # [STATE, [[record, status], ...], full]
PING = 3  # [PING, seq]
ACK = 4  # [ACK, seq]
PING_REQ = 5  # [PING_REQ, seq, target_id]
SUSPECT = 6  # [SUSPECT, node_id, incarnation, version]
DEAD = 7  # [DEAD, node_id, incarnation, version, (sender's alive count, sender id)]
LEAVE = 8  # [LEAVE, node_id, incarnation, version]
UPDATE = 9  # [UPDATE, record, want_ack]
UPDATE_ACK = 10  # [UPDATE_ACK, incarnation, version]
SYNC = 11  # [SYNC, view_hash]
DIGEST = 12  # [DIGEST, [[node_id, incarnation, version, status], ...], reply]
PULL = 13  # [PULL, [node_id, ...]]
REFUSE = 14  # [REFUSE, reason]

JOIN_RETRY_S = 1.0  # seeds not reached yet are asked again this often
STALL_S = 0.05  # a tick this late means our own loop stalled, not that peers failed

HANDSHAKE_CODES = frozenset({JOIN, STATE, DEAD, REFUSE})
"""Codes accepted from nodes that are not (or no longer) members: joining, and being told to rejoin."""


@dataclass
class Send:
    """Send ``message`` to the member ``node_id`` (over its ordered channel)."""

    node_id: str
    message: list[Any]


@dataclass
class SendEndpoint:
    """Send ``message`` to an endpoint whose node is not a member yet (a seed, or a dead node)."""

    endpoint: str
    message: list[Any]


@dataclass
class Event:
    """Tell the node: kind is one of joined, updated, suspect, alive, dead, left, self_dead, acked, refused."""

    kind: str
    record: MemberRecord | None = None
    detail: Any = None


Output = Send | SendEndpoint | Event


@dataclass
class Member:
    record: MemberRecord
    status: MemberStatus = MemberStatus.ALIVE
    since: float = 0.0
    suspect_deadline: float | None = None
    suspecters: set[str] = field(default_factory=set)


@dataclass
class _Probe:
    target: str
    seq: int
    started: float
    indirect_at: float
    suspect_at: float
    indirect_sent: bool = False


def _precedence(status: MemberStatus) -> int:
    # For the same (incarnation, version): dead and left beat suspect, suspect beats alive.
    return {MemberStatus.ALIVE: 0, MemberStatus.SUSPECT: 1, MemberStatus.DEAD: 2, MemberStatus.LEFT: 2}[status]


class SwimState:
    """One node's view of the membership and its failure detector."""

    def __init__(self, me: MemberRecord, config: MembershipConfig, rng: random.Random | None = None) -> None:
        self.me = me
        self.config = config
        self.rng = rng or random.Random()
        self.members: dict[str, Member] = {}
        self.local_health = 0
        self.joined = False
        self.left = False
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._next_probe_at = 0.0
        self._next_sync_at = 0.0
        self._planned: float | None = None
        self._next_join_at = 0.0
        # Indirect probes we run for others: our seq -> (requester, their seq).
        self._relayed: dict[int, tuple[str, int, float]] = {}
        self._joining: set[str] = set()
        self._seeds: set[str] = set()
        self._next_reconnect_at = 0.0
        self._reconnect_until = 0.0
        self._hash: bytes | None = None
        # Members whose acknowledgement of our current version we wait for.
        self.awaiting_ack: set[str] = set()

    # -- queries ----------------------------------------------------------------------------------

    def alive(self) -> list[MemberRecord]:
        """Members that are alive or suspect (both still route)."""
        return [m.record for m in self.members.values() if not m.status.gone]

    def status_of(self, node_id: str, incarnation: int) -> MemberStatus | None:
        """Status of that incarnation of a node; None if unknown (or an older incarnation)."""
        member = self.members.get(node_id)
        if member is None:
            return None
        if member.record.incarnation == incarnation:
            return member.status
        if member.record.incarnation > incarnation:
            return MemberStatus.DEAD
        return None

    def view_hash(self) -> bytes:
        if self._hash is not None:
            return self._hash
        entries = sorted(
            (m.record.node_id, m.record.incarnation, m.record.version)
            for m in self.members.values()
            if not m.status.gone
        )
        entries.append((self.me.node_id, self.me.incarnation, self.me.version))
        entries.sort()
        data = "|".join(f"{n}:{i}:{v}" for n, i, v in entries).encode()
        self._hash = hashlib.blake2b(data, digest_size=8).digest()
        return self._hash

    def next_deadline(self) -> float:
        deadlines = [self._next_probe_at, self._next_sync_at]
        if self._probe is not None:
            deadlines.append(self._probe.suspect_at if self._probe.indirect_sent else self._probe.indirect_at)
        deadlines.extend(m.suspect_deadline for m in self.members.values() if m.suspect_deadline is not None)
        if self._joining and not self.joined:
            deadlines.append(self._next_join_at)
        deadlines.append(self._next_reconnect_at)
        self._planned = min(deadlines)
        return self._planned

    def _scale(self) -> float:
        return 1.0 + self.local_health

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _broadcast(self, message: list[Any], exclude: Iterable[str] = ()) -> list[Output]:
        skip = set(exclude)
        return [
            Send(node_id, message) for node_id, m in self.members.items() if not m.status.gone and node_id not in skip
        ]

    # -- local actions ----------------------------------------------------------------------------

    def start_join(self, endpoints: Iterable[str], now: float) -> list[Output]:
        """Ask every seed endpoint for the full state (seeds are also asked again later when they
        are not members, so that a node cut off from its seeds finds its way back)."""
        endpoints = list(endpoints)
        self._seeds.update(e for e in endpoints if e != self.me.endpoint)
        return self._join(endpoints, now)

    def _join(self, endpoints: Iterable[str], now: float) -> list[Output]:
        self.left = False
        self._planned = None
        self._next_join_at = now + JOIN_RETRY_S
        self._next_reconnect_at = now + self.config.reconnect_interval_s
        self._next_probe_at = now + self.config.probe_interval_s
        self._next_sync_at = now + self.config.gossip_interval_s
        out: list[Output] = []
        for endpoint in endpoints:
            if endpoint != self.me.endpoint:
                self._joining.add(endpoint)
                out.append(SendEndpoint(endpoint, [JOIN, self.me.encode()]))
        if not self._joining:
            self.joined = True
        return out

    def contact(self, endpoint: str, now: float) -> list[Output]:
        """A peer was discovered at ``endpoint`` (mDNS): join through it unless it is a member."""
        if endpoint == self.me.endpoint or self.left or not is_valid_endpoint(endpoint):
            return []  # an announcement is a hint: one naming nothing a node may dial is ignored
        if any(m.record.endpoint == endpoint and not m.status.gone for m in self.members.values()):
            return []
        # Its STATE answer comes from a node we do not know yet: accept it for a while.
        self._reconnect_until = max(self._reconnect_until, now + 2 * self.config.reconnect_interval_s)
        return [SendEndpoint(endpoint, [JOIN, self.me.encode()])]

    def set_metadata(self, metadata: bytes, now: float) -> list[Output]:
        """Publish new metadata; members acknowledge (``awaiting_ack`` tracks who has not)."""
        self.me = MemberRecord(
            self.me.node_id,
            self.me.incarnation,
            self.me.version + 1,
            self.me.endpoint,
            self.me.name,
            self.me.mesh,
            self.me.protocol,
            metadata,
        )
        self._hash = None
        self.awaiting_ack = {n for n, m in self.members.items() if m.status is MemberStatus.ALIVE}
        return self._broadcast([UPDATE, self.me.encode(), True])

    def evict(self, node_id: str, now: float) -> list[Output]:
        """Hold a member dead on this node's own authority (its key was withdrawn): it must come
        back as a new incarnation, through the front door."""
        member = self.members.get(node_id)
        if member is None or member.status.gone:
            return []
        return self._declare(member, MemberStatus.DEAD, now)

    def leave(self, now: float) -> list[Output]:
        self.left = True
        out = self._broadcast([LEAVE, self.me.node_id, self.me.incarnation, self.me.version])
        return out

    def rejoin(self, incarnation: int, seeds: Iterable[str], now: float) -> list[Output]:
        """Come back under a new incarnation (after being declared dead, or a restart)."""
        self.me = MemberRecord(
            self.me.node_id,
            incarnation,
            0,
            self.me.endpoint,
            self.me.name,
            self.me.mesh,
            self.me.protocol,
            self.me.metadata,
        )
        # Everyone we ever knew, the dead included: after a partition the other side is "dead" to us.
        endpoints = {m.record.endpoint for m in self.members.values()} | set(seeds) | self._seeds
        self.members.clear()
        self._hash = None
        self._probe = None
        self._probe_order = []
        self._relayed.clear()
        self._joining.clear()
        self.awaiting_ack.clear()
        self.local_health = 0
        self.joined = False
        return self._join(endpoints, now)

    # -- time -------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Output]:
        out: list[Output] = []
        cfg = self.config
        if self._planned is not None and now - self._planned > STALL_S:
            # This node's own loop stalled: its deadlines passed while it could not read the
            # answers. Postpone every verdict by the stall, and doubt itself (Lifeguard).
            lag = now - self._planned
            self._postpone(lag)
            if lag > cfg.probe_timeout_s:
                self.local_health = min(cfg.max_local_health, self.local_health + 1)
        self._planned = None
        if self.left:
            return out
        if self._joining and not self.joined and now >= self._next_join_at:
            self._next_join_at = now + JOIN_RETRY_S
            out.extend(SendEndpoint(e, [JOIN, self.me.encode()]) for e in sorted(self._joining))
        if now >= self._next_reconnect_at:
            self._next_reconnect_at = now + cfg.reconnect_interval_s
            out.extend(self._reconnect(now))
        out.extend(self._check_probe(now))
        out.extend(self._check_suspects(now))
        if now >= self._next_probe_at:
            self._next_probe_at = now + cfg.probe_interval_s * self._scale()
            out.extend(self._start_probe(now))
        if now >= self._next_sync_at:
            self._next_sync_at = now + cfg.gossip_interval_s
            out.extend(self._start_sync())
        for seq, (_, _, deadline) in list(self._relayed.items()):
            if now >= deadline:
                del self._relayed[seq]
        for node_id, member in list(self.members.items()):
            if member.status.gone and now - member.since > cfg.dead_retention_s:
                del self.members[node_id]
                self._hash = None
        return out

    def _reconnect(self, now: float) -> list[Output]:
        """Knock on one door that should be open: a member held dead (after a partition heals it
        answers, and one side learns it must rejoin) or a seed that is not a live member."""
        live = {m.record.endpoint for m in self.members.values() if not m.status.gone}
        doors = sorted(
            {m.record.endpoint for m in self.members.values() if m.status is MemberStatus.DEAD} - live
            | (self._seeds - live - {self.me.endpoint})
        )
        if not doors:
            return []
        self._reconnect_until = now + 2 * self.config.reconnect_interval_s
        return [SendEndpoint(self.rng.choice(doors), [JOIN, self.me.encode()])]

    def _postpone(self, delay: float) -> None:
        if self._probe is not None:
            self._probe.indirect_at += delay
            self._probe.suspect_at += delay
        for member in self.members.values():
            if member.suspect_deadline is not None:
                member.suspect_deadline += delay

    def _start_probe(self, now: float) -> list[Output]:
        if self._probe is not None:
            return []
        target = None
        for _ in range(2):
            while self._probe_order:
                candidate = self._probe_order.pop()
                member = self.members.get(candidate)
                if member is not None and not member.status.gone:
                    target = candidate
                    break
            if target is not None:
                break
            # A new round over everyone alive, in a fresh random order.
            self._probe_order = sorted(n for n, m in self.members.items() if not m.status.gone)
            self.rng.shuffle(self._probe_order)
        if target is None:
            return []
        seq = self._next_seq()
        scale = self._scale()
        self._probe = _Probe(
            target,
            seq,
            now,
            indirect_at=now + self.config.probe_timeout_s * scale,
            suspect_at=now + self.config.probe_interval_s * scale,
        )
        return [Send(target, [PING, seq])]

    def _check_probe(self, now: float) -> list[Output]:
        probe = self._probe
        if probe is None:
            return []
        member = self.members.get(probe.target)
        if member is None or member.status.gone:
            self._probe = None
            return []
        if not probe.indirect_sent and now >= probe.indirect_at:
            probe.indirect_sent = True
            helpers = [n for n, m in self.members.items() if m.status is MemberStatus.ALIVE and n != probe.target]
            self.rng.shuffle(helpers)
            return [Send(h, [PING_REQ, probe.seq, probe.target]) for h in helpers[: self.config.indirect_probes]]
        if probe.indirect_sent and now >= probe.suspect_at:
            self._probe = None
            return self._suspect(member, self.me.node_id, now)
        return []

    def _suspect(self, member: Member, by: str, now: float) -> list[Output]:
        out: list[Output] = []
        if member.status is MemberStatus.ALIVE:
            member.status = MemberStatus.SUSPECT
            member.since = now
            member.suspecters = {by}
            member.suspect_deadline = now + self._suspicion_timeout(1)
            out.append(Event("suspect", member.record))
            if by == self.me.node_id:
                # Everyone hears it from us directly (the suspect too, so that it can refute at
                # once); those who learn it from us do not pass it on.
                rec = member.record
                out.extend(self._broadcast([SUSPECT, rec.node_id, rec.incarnation, rec.version]))
        elif member.status is MemberStatus.SUSPECT and by not in member.suspecters:
            member.suspecters.add(by)
            deadline = member.since + self._suspicion_timeout(len(member.suspecters))
            if member.suspect_deadline is None or deadline < member.suspect_deadline:
                member.suspect_deadline = deadline
        return out

    def _suspicion_timeout(self, confirmations: int) -> float:
        # Lifeguard: the more independent suspicions, the sooner the verdict (never below the minimum).
        cfg = self.config
        expected = max(1, min(cfg.indirect_probes, len(self.members) - 1))
        frac = math.log(confirmations + 1) / math.log(expected + 2)
        timeout = cfg.suspicion_timeout_s - (cfg.suspicion_timeout_s - cfg.suspicion_min_s) * min(1.0, frac)
        return max(cfg.suspicion_min_s, timeout) * self._scale()

    def _check_suspects(self, now: float) -> list[Output]:
        out: list[Output] = []
        for member in self.members.values():
            deadline = member.suspect_deadline
            if member.status is MemberStatus.SUSPECT and deadline is not None and now >= deadline:
                out.extend(self._declare(member, MemberStatus.DEAD, now, originate=True))
        return out

    def _declare(self, member: Member, status: MemberStatus, now: float, originate: bool = False) -> list[Output]:
        self._hash = None
        member.status = status
        member.since = now
        member.suspect_deadline = None
        self.awaiting_ack.discard(member.record.node_id)
        if self._probe is not None and self._probe.target == member.record.node_id:
            self._probe = None
        rec = member.record
        out: list[Output] = [Event("dead" if status is MemberStatus.DEAD else "left", rec)]
        if status is MemberStatus.DEAD and originate:
            out.extend(self._broadcast([DEAD, rec.node_id, rec.incarnation, rec.version]))
        return out

    def _start_sync(self) -> list[Output]:
        peers = [n for n, m in self.members.items() if m.status is MemberStatus.ALIVE]
        if not peers:
            return []
        return [Send(self.rng.choice(peers), [SYNC, self.view_hash()])]

    # -- input ------------------------------------------------------------------------------------

    def receive(self, sender: str | None, message: Any, now: float) -> list[Output]:
        """Handle a message from member ``sender`` (None: from an endpoint that is not a member).

        Raises:
            RecordDecodeError: the message is malformed.
        """
        if not isinstance(message, list) or not message or not isinstance(message[0], int):
            raise RecordDecodeError("membership message must be a non-empty list starting with a code")
        code = message[0]
        handler = _HANDLERS.get(code)
        if handler is None:
            raise RecordDecodeError(f"unknown membership message code {code}")
        if sender is None and code not in HANDSHAKE_CODES:
            return []
        return handler(self, sender, message, now)

    def _on_join(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        if len(message) not in (2, 3):
            raise RecordDecodeError(f"JOIN must have 2 or 3 fields, has {len(message)}")
        record = MemberRecord.decode(message[1])
        want_state = len(message) == 2 or message[2] is not False
        if record.node_id == self.me.node_id:
            return []
        if record.mesh != self.me.mesh:
            # Not answered: a stranger must not make this node connect to an address it names.
            return [Event("refused", record, f"a join from mesh {record.mesh!r} (this is {self.me.mesh!r})")]
        if record.protocol[0] != self.me.protocol[0]:
            return [Event("refused", record, f"protocol {record.protocol[0]}.{record.protocol[1]}")]
        known = self.members.get(record.node_id)
        if known is not None and known.status.gone and known.record.incarnation == record.incarnation:
            # It was declared dead (or left) under this incarnation: it must come back as a new one.
            return [SendEndpoint(record.endpoint, self.dead_notice(known.record))]
        if not want_state:
            # An introduction from a member we may not know yet: it learned of us from someone else.
            return self._merge(record, MemberStatus.ALIVE, now, push=False, via=record.node_id)
        out = self._merge(record, MemberStatus.ALIVE, now, push=True, via=record.node_id)
        state = [
            [m.record.encode(), int(m.status)] for m in self.members.values() if m.record.node_id != record.node_id
        ]
        state.append([self.me.encode(), int(MemberStatus.ALIVE)])
        out.append(Send(record.node_id, [STATE, state, True]))
        return out

    def _on_state(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 3)
        entries = message[1]
        if not isinstance(entries, list):
            raise RecordDecodeError("STATE entries must be a list")
        full = bool(message[2])
        if sender is None and not (full and (self._joining or now < self._reconnect_until)):
            return []  # unsolicited state from a stranger
        out: list[Output] = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2 or entry[1] not in (0, 1, 2, 3):
                raise RecordDecodeError("bad STATE entry")
            record = MemberRecord.decode(entry[0])
            status = MemberStatus(entry[1])
            known = self.members.get(record.node_id)
            held_alive = record.node_id == self.me.node_id or (known is not None and not known.status.gone)
            if sender is None and status is not MemberStatus.ALIVE and held_alive:
                # A stranger's suspicion or verdict about us or a member we hold alive: it may be
                # the one that was cut off (a healed partition). It teaches us members, not
                # verdicts; dead notices settle who rejoins.
                continue
            out.extend(self._merge(record, status, now, push=False, via=sender))
        if full and not self.joined:
            self.joined = True
            self._joining.clear()
            out.append(Event("synced"))
        return out

    def _on_ping(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 2)
        assert sender is not None
        return [Send(sender, [ACK, message[1]])]

    def _on_ack(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 2)
        seq = message[1]
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self._probe = None
            if not probe.indirect_sent and self.local_health > 0:
                self.local_health -= 1
            return []
        relayed = self._relayed.pop(seq, None) if isinstance(seq, int) else None
        if relayed is not None:
            requester, their_seq, _ = relayed
            return [Send(requester, [ACK, their_seq])]
        return []

    def _on_ping_req(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 3)
        assert sender is not None
        their_seq, target = message[1], message[2]
        if not isinstance(their_seq, int) or not is_valid_node_id(target):
            raise RecordDecodeError("bad PING_REQ")
        member = self.members.get(target)
        if member is None or member.status.gone:
            return []
        seq = self._next_seq()
        self._relayed[seq] = (sender, their_seq, now + self.config.probe_interval_s * 2)
        return [Send(target, [PING, seq])]

    def dead_notice(self, record: MemberRecord) -> list[Any]:
        """Tell a node we hold dead that it is: with our support (alive count) and our id, so that
        after a healed partition exactly one side of each pair yields."""
        return [DEAD, record.node_id, record.incarnation, record.version, self._support(), self.me.node_id]

    def _support(self) -> int:
        # Members we hold alive (not merely unsuspected): a node cut off suspects everyone.
        return 1 + sum(1 for m in self.members.values() if m.status is MemberStatus.ALIVE)

    def _claim(self, message: list[Any]) -> tuple[str, int, int]:
        if len(message) < 4:
            raise RecordDecodeError(f"membership message {message[0]} must have 4 fields, has {len(message)}")
        node_id, incarnation, version = message[1], message[2], message[3]
        if not is_valid_node_id(node_id) or not isinstance(incarnation, int) or not isinstance(version, int):
            raise RecordDecodeError("bad membership claim")
        return node_id, incarnation, version

    def _on_suspect(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        node_id, incarnation, version = self._claim(message)
        assert sender is not None
        if node_id == self.me.node_id:
            return self._refute(incarnation, version)
        member = self.members.get(node_id)
        if member is None or member.record.stamp != (incarnation, version):
            return []
        return self._suspect(member, sender, now)

    def _refute(self, incarnation: int, version: int) -> list[Output]:
        if incarnation != self.me.incarnation or version < self.me.version:
            return []
        # Someone suspects us: outbid the suspicion with a newer version, and doubt ourselves.
        self.local_health = min(self.config.max_local_health, self.local_health + 1)
        self._hash = None
        self.me = MemberRecord(
            self.me.node_id,
            self.me.incarnation,
            self.me.version + 1,
            self.me.endpoint,
            self.me.name,
            self.me.mesh,
            self.me.protocol,
            self.me.metadata,
        )
        return self._broadcast([UPDATE, self.me.encode(), False])

    def _on_dead(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        node_id, incarnation, version = self._claim(message)
        if node_id == self.me.node_id:
            if incarnation != self.me.incarnation or self.left:
                return []
            if sender is not None:
                # A member we hold alive saw us dead: we were cut off or stalled. Come back anew.
                return [Event("self_dead", self.me)]
            # From a node we hold dead ourselves (a partition healed): the side with more support
            # stays; the other rejoins. We tell a weaker side so, in turn.
            support = message[4] if len(message) > 4 and type(message[4]) is int else 0
            their_id = message[5] if len(message) > 5 and is_valid_node_id(message[5]) else ""
            if (support, their_id) > (self._support(), self.me.node_id):
                return [Event("self_dead", self.me)]
            theirs = self.members.get(their_id)
            if theirs is not None and theirs.status is MemberStatus.DEAD:
                return [SendEndpoint(theirs.record.endpoint, self.dead_notice(theirs.record))]
            return []
        if sender is None:
            return []
        member = self.members.get(node_id)
        if member is None or member.status.gone or member.record.stamp > (incarnation, version):
            return []
        return self._declare(member, MemberStatus.DEAD, now)

    def _on_leave(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        node_id, incarnation, _version = self._claim(message)
        member = self.members.get(node_id)
        if member is None or member.status.gone or member.record.incarnation != incarnation:
            return []
        return self._declare(member, MemberStatus.LEFT, now)

    def _on_update(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 3)
        assert sender is not None
        record = MemberRecord.decode(message[1])
        out = self._merge(record, MemberStatus.ALIVE, now, push=False, via=sender)
        if message[2] and record.node_id == sender:
            out.append(Send(sender, [UPDATE_ACK, record.incarnation, record.version]))
        return out

    def _on_update_ack(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 3)
        assert sender is not None
        if (message[1], message[2]) == self.me.stamp and sender in self.awaiting_ack:
            self.awaiting_ack.discard(sender)
            return [Event("acked", None, sender)]
        return []

    def _on_sync(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 2)
        assert sender is not None
        if message[1] == self.view_hash():
            return []
        return [Send(sender, [DIGEST, self._digest(), True])]

    def _digest(self) -> list[list[Any]]:
        digest = [[n, m.record.incarnation, m.record.version, int(m.status)] for n, m in self.members.items()]
        digest.append([self.me.node_id, self.me.incarnation, self.me.version, int(MemberStatus.ALIVE)])
        return digest

    def _on_digest(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 3)
        assert sender is not None
        entries, reply = message[1], bool(message[2])
        if not isinstance(entries, list):
            raise RecordDecodeError("DIGEST entries must be a list")
        theirs: dict[str, tuple[int, int, int]] = {}
        for entry in entries:
            if not (isinstance(entry, list) and len(entry) == 4 and is_valid_node_id(entry[0])):
                raise RecordDecodeError("bad DIGEST entry")
            if not all(isinstance(x, int) for x in entry[1:]) or entry[3] not in (0, 1, 2, 3):
                raise RecordDecodeError("bad DIGEST entry")
            theirs[entry[0]] = (entry[1], entry[2], entry[3])
        newer: list[list[Any]] = []
        wanted: list[str] = []
        mine = {n: (m.record, m.status) for n, m in self.members.items()}
        mine[self.me.node_id] = (self.me, MemberStatus.ALIVE)
        for node_id, (record, status) in mine.items():
            other = theirs.get(node_id)
            if other is None:
                if not status.gone:
                    newer.append([record.encode(), int(status)])
            elif (record.stamp, _precedence(status)) > (other[:2], _precedence(MemberStatus(other[2]))):
                newer.append([record.encode(), int(status)])
        for node_id, (inc, ver, status_code) in theirs.items():
            have = mine.get(node_id)
            if have is None:
                if status_code < MemberStatus.DEAD:
                    wanted.append(node_id)
            elif (inc, ver) > have[0].stamp or (
                (inc, ver) == have[0].stamp and _precedence(MemberStatus(status_code)) > _precedence(have[1])
            ):
                wanted.append(node_id)
        out: list[Output] = []
        if newer:
            out.append(Send(sender, [STATE, newer, False]))
        if wanted and reply:
            out.append(Send(sender, [PULL, wanted]))
        return out

    def _on_pull(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 2)
        assert sender is not None
        if not isinstance(message[1], list):
            raise RecordDecodeError("PULL must list node ids")
        entries: list[list[Any]] = []
        for node_id in message[1][:4096]:
            if node_id == self.me.node_id:
                entries.append([self.me.encode(), int(MemberStatus.ALIVE)])
            elif isinstance(node_id, str) and node_id in self.members:
                member = self.members[node_id]
                entries.append([member.record.encode(), int(member.status)])
        return [Send(sender, [STATE, entries, False])] if entries else []

    def _on_refuse(self, sender: str | None, message: list[Any], now: float) -> list[Output]:
        _expect_len(message, 2)
        reason = message[1]
        if not isinstance(reason, str):
            # str() of a peer's value could recurse through ~1000 nested lists (RecursionError).
            raise RecordDecodeError("REFUSE must give its reason as text")
        if sender is None and not (self._joining or now < self._reconnect_until):
            return []  # a stranger's refusal of something we did not ask for
        return [Event("refused", None, reason[:200])]

    # -- merging ----------------------------------------------------------------------------------

    def _merge(
        self, record: MemberRecord, status: MemberStatus, now: float, *, push: bool, via: str | None
    ) -> list[Output]:
        """Take what a peer (``via``) says about ``record`` if it is newer than what we know.

        A member we learn of from someone else may not know us yet: we introduce ourselves to it
        before anything else, so that our first data on that ordered channel is not dropped as
        coming from a stranger.
        """
        introduce = [Send(record.node_id, [JOIN, self.me.encode(), False])] if via != record.node_id else []
        self._hash = None
        if record.node_id == self.me.node_id:
            if record.incarnation == self.me.incarnation and status in (MemberStatus.SUSPECT, MemberStatus.DEAD):
                if status is MemberStatus.SUSPECT:
                    return self._refute(record.incarnation, record.version)
                return [Event("self_dead", self.me)] if not self.left else []
            return []
        if record.mesh != self.me.mesh or record.protocol[0] != self.me.protocol[0]:
            return []
        member = self.members.get(record.node_id)
        out: list[Output] = []
        if member is None:
            if status.gone:
                self.members[record.node_id] = Member(record, status, now)
                return out
            member = Member(record, MemberStatus.ALIVE, now)
            self.members[record.node_id] = member
            out.extend(introduce)
            out.append(Event("joined", record))
            if status is MemberStatus.SUSPECT:
                out.extend(self._suspect(member, "gossip", now))
        elif record.stamp > member.record.stamp:
            if member.status.gone and record.incarnation == member.record.incarnation and not status.gone:
                # Dead (or left) is final for an incarnation: only a new incarnation comes back.
                return out
            old = member.record
            was_gone = member.status.gone
            member.record = record
            if status.gone:
                if not was_gone:
                    out.extend(self._declare(member, status, now))
                else:
                    member.status = status
                return out
            member.status = MemberStatus.ALIVE
            member.since = now
            member.suspect_deadline = None
            member.suspecters.clear()
            if was_gone or record.incarnation != old.incarnation:
                out.extend(introduce)
                out.append(Event("joined", record, old))
            else:
                out.append(Event("updated", record, old))
            if status is MemberStatus.SUSPECT:
                out.extend(self._suspect(member, "gossip", now))
        elif record.stamp == member.record.stamp and _precedence(status) > _precedence(member.status):
            if status is MemberStatus.SUSPECT:
                out.extend(self._suspect(member, "gossip", now))
            else:
                out.extend(self._declare(member, status, now))
            return out
        else:
            return out
        if push:
            out.extend(self._broadcast([UPDATE, record.encode(), False], exclude=[record.node_id]))
        return out


def _expect_len(message: list[Any], n: int) -> None:
    if len(message) != n:
        raise RecordDecodeError(f"membership message {message[0]} must have {n} fields, has {len(message)}")


_HANDLERS = {
    JOIN: SwimState._on_join,
    STATE: SwimState._on_state,
    PING: SwimState._on_ping,
    ACK: SwimState._on_ack,
    PING_REQ: SwimState._on_ping_req,
    SUSPECT: SwimState._on_suspect,
    DEAD: SwimState._on_dead,
    LEAVE: SwimState._on_leave,
    UPDATE: SwimState._on_update,
    UPDATE_ACK: SwimState._on_update_ack,
    SYNC: SwimState._on_sync,
    DIGEST: SwimState._on_digest,
    PULL: SwimState._on_pull,
    REFUSE: SwimState._on_refuse,
}
