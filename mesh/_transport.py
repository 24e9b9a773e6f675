"""The ZeroMQ transport: the only module that touches sockets.

One ROUTER socket is bound per node for everything inbound; one DEALER per peer endpoint carries
everything outbound (Zyre's pattern), so each peer sees one ordered channel from us. The routing
id of every DEALER is our node id and incarnation, and every frame names the incarnation of the
node it is for, so frames to or from an old incarnation are dropped.

Nothing here awaits per message: the ROUTER's file descriptor is registered with the event loop
and drained with non-blocking receives in batches; records sent in one loop iteration to one peer
are coalesced into one frame and written with non-blocking sends. A peer that cannot take more
(not connected yet, or its queue full) keeps its frames here until its socket is writable again,
counted and bounded, never blocking the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from ._codec import CLS_DATA, CLS_HANDSHAKE, HEADER, MAGIC, PROTOCOL_MAJOR, PROTOCOL_MINOR
from ._config import MeshConfig

logger = logging.getLogger("mesh")

RECV_BATCH = 1024  # frames drained per readiness callback before other callbacks get a turn
MAX_PENDING_FRAMES = 10_000  # frames kept for a peer that is not writable before the oldest are dropped
MAX_SOCKETS = 16_384
ROUTER_RCVHWM = 10_000
BIG_FRAME = 1_048_576  # libzmq's default of 1 023 is too few for dozens of full-mesh nodes in a process

_shared_context: zmq.Context[Any] | None = None


def shared_context() -> zmq.Context[Any]:
    """The ZeroMQ context of unsecured nodes, with room for many sockets."""
    global _shared_context
    if _shared_context is None or _shared_context.closed:
        raise_fd_limit()
        ctx: zmq.Context[Any] = zmq.Context()
        ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)  # a context option (setsockopt would set a socket default)
        _shared_context = ctx
    return _shared_context


def raise_fd_limit() -> None:
    """Raise the soft file-descriptor limit to the hard one (each socket needs a few)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # pragma: no cover - a restricted environment
            pass


def routing_id(node_id: str, incarnation: int) -> bytes:
    """node id, NUL, incarnation (8 bytes), and a nonce (4 bytes) unique to the socket: a ROUTER never
    sees two connections with one id, so it never needs ZeroMQ's handover (whose error path aborts
    libzmq 4.3.5: zeromq/libzmq#4841)."""
    return node_id.encode() + b"\x00" + incarnation.to_bytes(8, "big") + os.urandom(4)


def parse_routing_id(rid: bytes) -> tuple[str, int] | None:
    if len(rid) < 14 or rid[-13] != 0:
        return None
    try:
        node_id = rid[:-13].decode()
    except UnicodeDecodeError:
        return None
    return node_id, int.from_bytes(rid[-12:-4], "big")


@dataclass(eq=False)
class Link:
    """The DEALER to one peer endpoint and what waits to be written to it."""

    endpoint: str
    socket: zmq.Socket[Any]
    outbox: list[tuple[int, int, Any, int]] = field(default_factory=list)  # (class, target inc, record, size)
    pending: deque[bytes] = field(default_factory=deque)
    watching: bool = False


FrameHandler = Callable[[str, int, int, memoryview], None]


class Transport:
    """Sockets and frames of one node.

    Args:
        on_frame: called with (sender node id, sender incarnation, frame class, body) for every
            well-formed frame addressed to this incarnation.
        on_bad_frame: called with (reason, routing id) for every frame refused before decoding.
    """

    def __init__(
        self,
        *,
        node_id: str,
        incarnation: int,
        config: MeshConfig,
        on_frame: FrameHandler,
        on_bad_frame: Callable[[str, bytes], None],
        context: zmq.Context[Any] | None = None,
        socket_setup: Callable[[zmq.Socket[Any], bool, str | None], None] | None = None,
        client_allowed: Callable[[str], bool] | None = None,
    ) -> None:
        """``client_allowed`` (security on): whether the key a connection authenticated with (its
        ZAP User-Id) is still allowed, asked for every frame it brings: ZeroMQ checks keys only
        when a connection opens, and a withdrawn key must not keep talking on an open one."""
        self._node_id = node_id
        self._incarnation = incarnation
        self._config = config
        self._on_frame = on_frame
        self._on_bad_frame = on_bad_frame
        self._context = context or shared_context()
        self._socket_setup = socket_setup
        self._client_allowed = client_allowed
        self._router: zmq.Socket[Any] | None = None
        self._links: dict[str, Link] = {}
        self._dirty: set[Link] = set()
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._packer = msgpack.Packer(use_bin_type=True)
        self._frame_limit = config.max_message_size + 64 * 1024
        self._closed = False
        self._version_log_at = 0.0
        self._refused_endpoints: set[str] = set()
        self._unreachable_log_at = 0.0
        self.stats = {
            "frames_in": 0,
            "frames_out": 0,
            "bytes_in": 0,
            "bytes_out": 0,
            "dropped_pending": 0,
            "refused_endpoints": 0,
            "unreachable_endpoints": 0,
        }

    @property
    def frame_limit(self) -> int:
        return self._frame_limit

    # -- lifecycle --------------------------------------------------------------------------------

    def bind(self, host: str, port: int) -> int:
        """Bind the ROUTER and return the port (a free one when ``port`` is 0)."""
        self._loop = asyncio.get_running_loop()
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # Frames queued in libzmq before this node reads them: peers' credit windows keep far below;
        # a sender that ignores them is held back by TCP when it is reached.
        router.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
        router.setsockopt(zmq.MAXMSGSIZE, self._frame_limit)
        self._keepalive(router)
        if ":" in host and not host.startswith("["):
            router.setsockopt(zmq.IPV6, 1)
            bind_host = f"[{host}]"
        else:
            bind_host = host
        if host in ("0.0.0.0", "*", "::"):
            router.setsockopt(zmq.IPV6, 1 if host == "::" else 0)
            bind_host = "*"
        if self._socket_setup is not None:
            self._socket_setup(router, True, None)
        try:
            if port == 0:
                port = router.bind_to_random_port(f"tcp://{bind_host}", min_port=20_000, max_port=60_000)
            else:
                router.bind(f"tcp://{bind_host}:{port}")
        except zmq.ZMQError as exc:
            router.close(0)
            raise OSError(exc.errno, f"cannot bind tcp://{bind_host}:{port}: {exc}") from exc
        self._router = router
        self._loop.add_reader(router.fileno(), self._on_readable)
        # The FD is edge-triggered: drain anything that arrived before we started watching.
        self._loop.call_soon(self._on_readable)
        return port

    def _keepalive(self, sock: zmq.Socket[Any]) -> None:
        sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
        sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 30)
        sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, 5)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 2_000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10_000)

    def set_incarnation(self, incarnation: int) -> None:
        """Take a new incarnation: every DEALER is recreated with the new routing id."""
        self._incarnation = incarnation
        for endpoint in list(self._links):
            self.close_link(endpoint)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        for endpoint in list(self._links):
            self.close_link(endpoint)
        if self._router is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._router.fileno())
            self._router.close(0)
            self._router = None

    # -- sending ----------------------------------------------------------------------------------

    def _link(self, endpoint: str) -> Link | None:
        link = self._links.get(endpoint)
        if link is None:
            try:
                sock = self._context.socket(zmq.DEALER)
            except zmq.ZMQError as exc:  # out of sockets or file descriptors
                self._unreachable(endpoint, exc)
                return None
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.ROUTING_ID, routing_id(self._node_id, self._incarnation))
            sock.setsockopt(zmq.RECONNECT_IVL, 100)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2_000)
            self._keepalive(sock)
            if endpoint.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            if self._socket_setup is not None:
                try:
                    self._socket_setup(sock, False, endpoint)
                except ValueError as exc:
                    sock.close(0)
                    self.stats["refused_endpoints"] += 1
                    if endpoint not in self._refused_endpoints and len(self._refused_endpoints) < 1024:
                        self._refused_endpoints.add(endpoint)
                        logger.error("not connecting to %s: %s", endpoint, exc)
                    return None
            try:
                sock.connect(_strip_key(endpoint))
            except zmq.ZMQError as exc:
                # Membership validates the endpoints peers name; this is the last line of defence: an
                # endpoint ZeroMQ cannot dial is an unreachable peer, never an exception for the
                # caller (membership would stop at it).
                sock.close(0)
                self._unreachable(endpoint, exc)
                return None
            link = Link(endpoint, sock)
            self._links[endpoint] = link
        return link

    def _unreachable(self, endpoint: str, exc: zmq.ZMQError) -> None:
        self.stats["unreachable_endpoints"] += 1
        now = time.monotonic()
        if now >= self._unreachable_log_at:  # the endpoint may come from a peer: one line per interval
            self._unreachable_log_at = now + self._config.bad_frame_log_interval_s
            logger.warning("cannot connect to %r, dropping what was sent to it: %s", endpoint[:200], exc)

    def has_link(self, endpoint: str) -> bool:
        return endpoint in self._links

    def links(self) -> list[str]:
        return list(self._links)

    def send(self, endpoint: str, target_incarnation: int, record: Any, size: int = 0, handshake: bool = False) -> None:
        """Queue ``record`` for the node at ``endpoint``; it is written at the end of this loop
        iteration, together with everything else queued for that peer."""
        link = self._links.get(endpoint) or self._link(endpoint)
        if link is None:
            return  # refused by the security layer, or not dialable (counted and logged)
        link.outbox.append((CLS_HANDSHAKE if handshake else CLS_DATA, target_incarnation, record, size))
        self._dirty.add(link)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Encode and write everything queued."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, set()
        for link in dirty:
            if link.outbox:
                self._encode(link)
            if link.pending:
                self._write(link)

    def _encode(self, link: Link) -> None:
        outbox, link.outbox = link.outbox, []
        pack = self._packer.pack
        limit = self._frame_limit // 2
        i = 0
        n = len(outbox)
        while i < n:
            cls, inc, _, _ = outbox[i]
            j = i
            total = 0
            # One frame per run of records with the same class and target, up to half the limit.
            while j < n and outbox[j][0] == cls and outbox[j][1] == inc and (total < limit or j == i):
                total += outbox[j][3] + 64
                j += 1
            records = [entry[2] for entry in outbox[i:j]]
            # The shared packer keeps its largest buffer: big frames get a buffer of their own.
            body = pack(records) if total < BIG_FRAME else msgpack.packb(records, use_bin_type=True)
            link.pending.append(HEADER.pack(MAGIC, PROTOCOL_MAJOR, PROTOCOL_MINOR, cls, inc) + body)
            i = j
        if len(link.pending) > MAX_PENDING_FRAMES:
            drop = len(link.pending) - MAX_PENDING_FRAMES
            for _ in range(drop):
                link.pending.popleft()
            self.stats["dropped_pending"] += drop
            logger.warning("peer %s is not taking frames: dropped the %d oldest", link.endpoint, drop)

    def _write(self, link: Link) -> None:
        sock = link.socket
        pending = link.pending
        stats = self.stats
        try:
            while pending:
                frame = pending[0]
                # Copying is cheaper than pyzmq's zero-copy bookkeeping (a thread) below ~1 MiB.
                sock.send(frame, zmq.NOBLOCK, copy=len(frame) < 1_048_576)
                pending.popleft()
                stats["frames_out"] += 1
                stats["bytes_out"] += len(frame)
        except zmq.Again:
            self._watch(link)
            return
        except zmq.ZMQError as exc:
            logger.warning("send to %s failed: %s", link.endpoint, exc)
            return
        if link.watching:
            self._unwatch(link)

    def _watch(self, link: Link) -> None:
        if not link.watching and self._loop is not None:
            link.watching = True
            self._loop.add_reader(link.socket.fileno(), self._on_link_event, link)
            # Edge-triggered: check once now in case it became writable meanwhile.
            self._loop.call_soon(self._on_link_event, link)

    def _unwatch(self, link: Link) -> None:
        if link.watching and self._loop is not None:
            link.watching = False
            self._loop.remove_reader(link.socket.fileno())

    def _on_link_event(self, link: Link) -> None:
        if link.socket.closed:
            return
        if _events(link.socket) & zmq.POLLOUT:
            self._write(link)

    def pending_frames(self, endpoint: str) -> int:
        link = self._links.get(endpoint)
        return 0 if link is None else len(link.pending) + len(link.outbox)

    def close_link(self, endpoint: str) -> int:
        """Close the DEALER to ``endpoint``; returns how many frames were still waiting."""
        link = self._links.pop(endpoint, None)
        if link is None:
            return 0
        self._dirty.discard(link)
        lost = len(link.pending) + len(link.outbox)
        self._unwatch(link)
        link.socket.close(0)
        return lost

    # -- receiving --------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        router = self._router
        if router is None:
            return
        recv = router.recv_multipart if self._client_allowed is None else self._recv_authorized
        count = 0
        stats = self.stats
        try:
            while count < RECV_BATCH:
                parts = recv(zmq.NOBLOCK)
                count += 1
                if len(parts) != 2:
                    if parts:  # none: refused and counted by _recv_authorized
                        self._on_bad_frame("wrong number of parts", parts[0])
                    continue
                rid, frame = parts
                stats["frames_in"] += 1
                stats["bytes_in"] += len(frame)
                self._handle(rid, frame)
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # pragma: no cover - socket closed under us
            logger.debug("receive failed: %s", exc)
            return
        if self._router is not None and (count >= RECV_BATCH or _events(self._router) & zmq.POLLIN):
            assert self._loop is not None
            self._loop.call_soon(self._on_readable)
        if self._dirty and not self._flush_scheduled:
            self.flush()

    def _recv_authorized(self, flags: int) -> list[bytes]:
        """One message, with security on: [] when its connection's key is no longer allowed (the
        frames keep the connection's metadata, its ZAP User-Id, only when received uncopied)."""
        assert self._router is not None and self._client_allowed is not None
        frames = self._router.recv_multipart(flags, copy=False)
        if not self._client_allowed(str(frames[0].get("User-Id"))):
            self._on_bad_frame("its key is no longer allowed", frames[0].bytes)
            return []
        return [frame.bytes for frame in frames]

    def _handle(self, rid: bytes, frame: bytes) -> None:
        parsed = parse_routing_id(rid)
        if parsed is None:
            self._on_bad_frame("malformed routing id", rid)
            return
        if len(frame) < HEADER.size:
            self._on_bad_frame("frame shorter than its header", rid)
            return
        try:
            magic, major, minor, cls, target = HEADER.unpack_from(frame)
        except struct.error:
            self._on_bad_frame("bad header", rid)
            return
        if magic != MAGIC:
            self._on_bad_frame("bad magic", rid)
            return
        if major != PROTOCOL_MAJOR:
            now = time.monotonic()
            if now >= self._version_log_at:  # one line per interval, however many ids
                self._version_log_at = now + self._config.bad_frame_log_interval_s
                logger.error(
                    "refusing node %s: it speaks protocol %d.%d, this node %d.%d (major versions must match)",
                    parsed[0],
                    major,
                    minor,
                    PROTOCOL_MAJOR,
                    PROTOCOL_MINOR,
                )
            self._on_bad_frame("protocol major version", rid)
            return
        if cls not in (CLS_DATA, CLS_HANDSHAKE):
            self._on_bad_frame("unknown frame class", rid)
            return
        if cls == CLS_DATA and target != self._incarnation:
            self._on_bad_frame("addressed to another incarnation", rid)
            return
        try:
            self._on_frame(parsed[0], parsed[1], cls, memoryview(frame)[HEADER.size :])
        except Exception as exc:
            # Nothing a peer sends may stop this node from reading: count it (rate-limited log) and go on.
            logger.debug("error handling a frame from %s", parsed[0], exc_info=True)
            self._on_bad_frame(f"frame could not be handled ({type(exc).__name__})", rid)


def _events(sock: zmq.Socket[Any]) -> int:
    events: int = sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]
    return events


def _strip_key(endpoint: str) -> str:
    """``tcp://host:port#key`` names the server key of a seed; ZeroMQ wants the bare endpoint."""
    return endpoint.split("#", 1)[0]
