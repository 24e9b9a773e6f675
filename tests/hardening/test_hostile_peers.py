"""Crafted frames from strangers and from a joined peer, aimed at one node (issue 8 part 2; DESIGN §3
"Bytes from peers are hostile"; STYLE 11).

The target runs in the test process, so its counters, log records and allocations are read
directly. Strangers speak through raw ZeroMQ DEALER sockets; the joined peer is a real ``MeshNode``
whose link sends the crafted records (with its flow-control credit, as a real sender would).
"""

from __future__ import annotations

import functools
import logging
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import zmq
from support.procs import NodeProcesses

from mesh import (
    AgentId,
    MeshNode,
    MessageContext,
    RoutedAgent,
    TypeSubscription,
    event,
    rpc,
    try_get_known_serializers_for_type,
)
from mesh import _codec as wire
from mesh._transport import routing_id
from mesh.testing import FAST_CONFIG, LocalMesh, quiesce, wait_for

# Bound on the target counting what was sent to it (loopback, a few hundred frames).
COUNT_TIMEOUT_S = 10.0
# "Rate-limit logged": a burst of bad input may cost the log this many lines, not one per frame.
MAX_LOG_LINES = 3
MEMBER_REFUSE = 14  # discovery's membership code REFUSE: [REFUSE, reason]
MEMBER_JOIN = 1  # [JOIN, record]


@dataclass
class Text:
    text: str


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @rpc
    async def echo(self, message: Text, ctx: MessageContext) -> Text:
        return message


class Listener(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("listener")
        self.seen: list[str] = []

    @event
    async def on_text(self, message: Text, ctx: MessageContext) -> None:
        self.seen.append(message.text)


class LogLines(logging.Handler):
    """Every record of level WARNING and above that the mesh and discovery loggers emit."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.levelname} {record.getMessage()[:200]}")


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    handler = LogLines()
    loggers = [logging.getLogger("mesh"), logging.getLogger("discovery")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.fixture
async def target() -> AsyncIterator[MeshNode]:
    async with LocalMesh(1) as mesh:
        node = mesh.nodes[0]
        await Echo.register(node, "echo", Echo)
        yield node


class Strangers:
    """Raw DEALER sockets, one per routing id, connected to a node; closed at the end."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._context = zmq.Context()
        self._sockets: dict[bytes, zmq.Socket[Any]] = {}

    def send(self, rid: bytes, *frames: bytes) -> None:
        sock = self._sockets.get(rid)
        if sock is None:
            sock = self._context.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTING_ID, rid)
            sock.setsockopt(zmq.SNDTIMEO, 5_000)  # a send that blocks this long fails the test
            sock.connect(self._endpoint)
            self._sockets[rid] = sock
        sock.send_multipart(list(frames))

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close(0)
        self._context.term()


@pytest.fixture
def strangers(target: MeshNode) -> Iterator[Strangers]:
    assert target.address is not None
    sockets = Strangers(target.address)
    try:
        yield sockets
    finally:
        sockets.close()


def header(cls: int, target_incarnation: int = 0, major: int = wire.PROTOCOL_MAJOR) -> bytes:
    return wire.HEADER.pack(wire.MAGIC, major, wire.PROTOCOL_MINOR, cls, target_incarnation)


@functools.cache
def stranger_rid(i: int) -> bytes:
    """One routing id per stranger (``routing_id`` adds a random nonce on every call)."""
    return routing_id(f"stranger-{i}", 1)


async def _counted(node: MeshNode, key: str, at_least: int) -> None:
    await wait_for(lambda: node.statistics()[key] >= at_least, COUNT_TIMEOUT_S, f"{key} reaching {at_least}")


async def _still_serves(node: MeshNode) -> None:
    """A new node joins ``node`` and gets an answer from it."""
    checker = MeshNode(name="checker", mesh=node.mesh, discovery="none", seeds=[str(node.address)], config=FAST_CONFIG)
    checker.add_message_serializer(try_get_known_serializers_for_type(Text))
    async with checker:
        await checker.wait_for_peers(1, timeout=COUNT_TIMEOUT_S)
        assert await checker.send_message(Text("ok"), AgentId("echo", "x"), timeout=COUNT_TIMEOUT_S) == Text("ok")


# -- a joined peer sending invalid ids --------------------------------------------------------------


async def test_ids_and_topics_from_a_joined_peer_are_validated_counted_and_never_delivered() -> None:
    async with LocalMesh(2) as mesh:
        a, b = mesh.nodes
        await Echo.register(a, "echo", Echo)
        await Listener.register(a, "listener", Listener)
        await a.add_subscription(TypeSubscription("news", "listener"))
        payload = b'{"text": "crafted"}'

        def publish(topic_type: Any, recipients: Any, sender: Any = None) -> list[Any]:
            return [
                wire.PUBLISH,
                "m-1",
                topic_type,
                "k1",
                sender,
                recipients,
                "Text",
                "application/json",
                payload,
                0,
                0,
            ]

        def call(recipient: Any) -> list[Any]:
            return [wire.RPC, 1, b.node_id, "m-2", recipient, None, "Text", "application/json", payload, 0, 0]

        data = [
            publish("news", [["bad type!", "k1"]]),  # an agent type outside ^[\w\-\.]+\Z
            publish("news", [["listener/x", "k1"]]),
            publish("bad topic!", [["listener", "k1"]]),  # a topic type outside ^[\w\-\.\:\=]+\Z
            publish("", [["listener", "k1"]]),
            publish("news", [["listener", 7]]),  # a key that is not text
            publish("news", [["listener", "k1"]], sender=["no spaces allowed", "s"]),
            publish("news", [["listener", "k" * 5000]]),  # a key over the size limit
            call(["bad type!", "k1"]),
            call(["echo", None]),
        ]
        control = [
            [wire.AGENT_OP, 2, b.node_id, "metadata", "bad type!", "k1", None],
            [wire.HANDOVER, 3, "bad type!", "k1", b"\x80"],
            [wire.SETTLED, -1, ["echo"]],  # an incarnation that is not a non-negative integer
            [wire.SETTLED, 1, "echo"],  # agent types not in a list
            [wire.SETTLED, 1, [7]],
            [wire.SETTLED, 1],
            [wire.FORWARDED, -1, b.node_id],
            [wire.FORWARDED, 1, 7],  # an owner that is not a node id
            [wire.FORWARDED, 1],
        ]
        crafted = data + control
        before = a.statistics()
        agents_before = set(a._agents.instances)
        link = b._link
        for record in data:
            size = len(payload) + 128
            if not link.try_send_data(a.node_id, record, size):
                await link.send_data(a.node_id, record, size)
        for record in control:
            assert link.send_control(a.node_id, record)
        await _counted(a, "bad_frames", before["bad_frames"] + len(crafted))
        await quiesce([a, b])
        after = a.statistics()
        assert after["bad_frames"] == before["bad_frames"] + len(crafted)
        assert after["delivered"] == before["delivered"] and after["handler_errors"] == before["handler_errors"]
        assert set(a._agents.instances) == agents_before, "a crafted id instantiated an agent"

        # The same records with valid ids are delivered: the crafting itself is right.
        valid = publish("news", [["listener", "k1"]])
        if not link.try_send_data(a.node_id, valid, len(payload) + 128):
            await link.send_data(a.node_id, valid, len(payload) + 128)
        await quiesce([a, b])
        assert a.statistics()["delivered"] == before["delivered"] + 1
        listener = await a.try_get_underlying_agent_instance(AgentId("listener", "k1"), Listener)
        assert listener.seen == ["crafted"]
        assert await b.send_message(Text("still"), AgentId("echo", "k"), timeout=COUNT_TIMEOUT_S) == Text("still")


# -- strangers ----------------------------------------------------------------------------------------


async def test_data_frames_from_a_stranger_are_dropped_before_their_bodies_are_decoded(
    target: MeshNode, strangers: Strangers
) -> None:
    # A body that would decode into a million Python lists (tens of MB) if anything decoded it.
    body = amplifying_body(1 << 20)
    before = target.statistics()
    with traced() as peak:
        for i in range(4):
            strangers.send(stranger_rid(i), header(wire.CLS_DATA, target.incarnation) + body)
        await _counted(target, "frames_from_non_members", before["frames_from_non_members"] + 4)
    # Copies of the frame as sent and as received (two at a time at most); decoding it would cost
    # some 60 times its size.
    assert peak() < 4 * len(body), f"{peak()} bytes allocated for frames that should not be decoded"
    assert target.statistics()["bad_frames"] == before["bad_frames"]
    await _still_serves(target)


async def test_version_refusals_from_many_routing_ids_are_rate_limited(
    target: MeshNode, strangers: Strangers, log_lines: LogLines
) -> None:
    before = target.statistics()["bad_frames"]
    count = 50
    for i in range(count):
        strangers.send(stranger_rid(i), header(wire.CLS_HANDSHAKE, major=wire.PROTOCOL_MAJOR + 1) + b"\x90")
    await _counted(target, "bad_frames", before + count)
    assert len(log_lines.lines) <= MAX_LOG_LINES, (
        f"{count} frames of another major version from {count} routing ids wrote {len(log_lines.lines)} "
        "warning lines:\n" + "\n".join(log_lines.lines[:5])
    )


async def test_membership_refusals_from_a_stranger_are_rate_limited(
    target: MeshNode, strangers: Strangers, log_lines: LogLines
) -> None:
    count = 200
    for i in range(count):
        body = msgpack.packb([[wire.MEMBER, [MEMBER_REFUSE, f"go away {i}"]]])
        strangers.send(stranger_rid(0), header(wire.CLS_HANDSHAKE) + body)
    await _counted(target, "frames_in", count)
    await _still_serves(target)
    assert len(log_lines.lines) <= MAX_LOG_LINES, (
        f"{count} REFUSE messages from one stranger wrote {len(log_lines.lines)} warning lines:\n"
        + "\n".join(log_lines.lines[:5])
    )


async def test_joins_from_another_mesh_make_no_connections_and_few_log_lines(
    target: MeshNode, strangers: Strangers, log_lines: LogLines
) -> None:
    count = 200
    fds_before = len(os.listdir("/proc/self/fd"))
    for i in range(count):
        record = [f"intruder-{i}", 1, 0, f"tcp://127.0.0.1:{20_000 + i}", "x", "another-mesh", 1, 0, b""]
        body = msgpack.packb([[wire.MEMBER, [MEMBER_JOIN, record]]], use_bin_type=True)
        strangers.send(stranger_rid(0), header(wire.CLS_HANDSHAKE) + body)
    await _counted(target, "frames_in", count)
    opened = len(os.listdir("/proc/self/fd")) - fds_before
    await _still_serves(target)
    problems = []
    if opened > 8:  # the stranger's own socket: a handful
        problems.append(f"the node opened {opened} file descriptors (a connection per endpoint named by a stranger)")
    if len(log_lines.lines) > MAX_LOG_LINES:
        problems.append(f"{len(log_lines.lines)} warning lines, e.g. {log_lines.lines[0]!r}")
    assert not problems, f"{count} JOINs from one stranger, naming another mesh and {count} endpoints: " + "; ".join(
        problems
    )


# -- endpoints named by peers ---------------------------------------------------------------------------

# Endpoints a JOIN may name that no node may dial: ZeroMQ refuses some at ``connect`` (which used to
# escape the membership driver and stop its timer), and accepts others that reach what no peer
# should make a node reach (local sockets, its own interfaces).
MALFORMED_ENDPOINTS = [
    "tcp://x",  # no port
    "tcp://x:abc",
    "tcp://x:0",
    "tcp://x:65536",
    "tcp://_x:1",
    "tcp://a b:1",
    "tcp://127.0.0.1:1#not-a-key",
    "tcp://eth0;127.0.0.1:1",  # ZeroMQ's source-address form
    "ipc:///tmp/agentmesh-hostile-join",
    "inproc://agentmesh-hostile-join",
]
# Bound on a SIGKILLed peer being declared dead with FAST_CONFIG (about a second; a loaded 2-core
# machine may be several times slower).
DETECTION_TIMEOUT_S = 15.0


async def test_joins_naming_malformed_endpoints_are_refused_and_membership_keeps_working(
    target: MeshNode, strangers: Strangers, node_procs: NodeProcesses
) -> None:
    assert target.address is not None
    # A real peer in its own process, joined before the hostile frames, to be killed after them.
    victim = await node_procs.start("victim", seeds=[target.address], extra_args=["--mesh", target.mesh])
    await wait_for(lambda: victim.node_id in {p.node_id for p in target.peers}, COUNT_TIMEOUT_S, "the victim joining")
    before = target.statistics()
    for i, endpoint in enumerate(MALFORMED_ENDPOINTS):
        record = [f"fake-{i}", 1, 0, endpoint, "x", target.mesh, wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR, b""]
        body = msgpack.packb([[wire.MEMBER, [MEMBER_JOIN, record]]], use_bin_type=True)
        strangers.send(stranger_rid(i), header(wire.CLS_HANDSHAKE) + body)
    await _counted(target, "frames_in", before["frames_in"] + len(MALFORMED_ENDPOINTS))
    membership = target._link.membership
    assert membership is not None

    # (a) A new node still joins through it, and is answered.
    await _still_serves(target)
    # (b) Failure detection still runs: a SIGKILLed peer is declared dead.
    node_procs.kill(victim)
    await wait_for(
        lambda: victim.node_id not in {p.node_id for p in target.peers},
        DETECTION_TIMEOUT_S,
        "the killed peer being declared dead",
    )
    status = membership.member_status().get(victim.node_id)
    assert status is not None and status[1].gone
    # Each JOIN was refused and counted; none made a member (whose endpoint gossip would spread).
    fakes = sorted(n for n in membership.member_status() if n.startswith("fake-"))
    assert fakes == [], f"JOINs naming malformed endpoints made members of {fakes}"
    after = target.statistics()
    assert after["bad_membership_messages"] == before["bad_membership_messages"] + len(MALFORMED_ENDPOINTS)


# -- a frame that expands into memory ----------------------------------------------------------------


def amplifying_body(n: int) -> bytes:
    """A msgpack array of ``n`` empty arrays: ``n + 5`` bytes that decode into ``n`` Python lists."""
    return b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n


@contextmanager
def traced() -> Iterator[Any]:
    """Trace allocations in this process; yields a function returning the peak above the start."""
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    peak = 0

    def read() -> int:
        nonlocal peak
        peak = max(peak, tracemalloc.get_traced_memory()[1] - start)
        return peak

    try:
        yield read
    finally:
        read()
        tracemalloc.stop()


# Decoding may cost a small multiple of a frame's size in Python objects (a list of short records),
# not the ~60x of one list object per byte.
MAX_EXPANSION = 16


async def test_a_handshake_frame_from_a_stranger_does_not_expand_far_beyond_its_size(
    target: MeshNode, strangers: Strangers
) -> None:
    body = amplifying_body(1 << 20)  # 1 MiB: under max_message_size, so it passes the size check
    before = target.statistics()["frames_in"]
    with traced() as peak:
        started = time.monotonic()
        strangers.send(stranger_rid(0), header(wire.CLS_HANDSHAKE) + body)
        await _counted(target, "frames_in", before + 1)
        handled_s = time.monotonic() - started
    print(f"a {len(body)}-byte handshake frame from a stranger: peak {peak() / 2**20:.1f} MiB, {handled_s:.2f} s")
    await _still_serves(target)
    assert peak() < MAX_EXPANSION * len(body), (
        f"a {len(body)}-byte frame from a stranger cost {peak()} bytes of Python objects "
        f"({peak() / len(body):.0f}x its size; the loop was busy {handled_s:.2f} s)"
    )
