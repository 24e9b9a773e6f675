"""MeshLink: a node's connection to the rest of the mesh.

It owns the transport and the membership, keeps one :class:`Peer` per live member (its decoded
metadata, its flow-control window, what it owes us), tracks calls in flight, and turns frames into
calls on the node. Data (publishes and RPC requests) is flow-controlled by per-peer credit windows
counted in messages and bytes; everything else (replies, cancels, credits, membership) is control
traffic that data never holds up: a data sender out of credit waits before its record is queued,
so control records always find the channel open.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from discovery import MemberRecord, Membership, MembershipEvent, MemberStatus

from . import _codec as wire
from ._cancellation import CancellationToken
from ._codec import FrameDecodeError
from ._config import MeshConfig
from ._errors import AgentUnreachableError, SendTimeoutError, compat
from ._ids import AgentId
from ._routing import NodeInfo
from ._transport import Transport

if TYPE_CHECKING:
    from ._node import MeshNode

logger = logging.getLogger("mesh")

BIND_RETRY_S = 2.0  # how long a restarting node waits for its old port to be released
MAX_FORWARDED = 10_000  # remembered forwarded calls (to pass on their cancels)
CREDIT_DELAY_S = 0.002  # longest a credit below a quarter window waits before it is sent
MAX_STRANGER_LINKS = 64  # open connections to endpoints that are not members (seeds, knocks)


@dataclass
class Peer:
    """A live member as this node sees it."""

    record: MemberRecord
    info: NodeInfo
    status: MemberStatus = MemberStatus.ALIVE
    credit_msgs: int = 0
    credit_bytes: int = 0
    waiters: deque[tuple[asyncio.Future[None], int]] = field(default_factory=deque)
    sent: int = 0
    credited: int = 0
    due_msgs: int = 0
    due_bytes: int = 0
    held: deque[tuple[Any, int]] = field(default_factory=deque)
    window_violations: int = 0
    received_uncredited: int = 0

    @property
    def node_id(self) -> str:
        return self.record.node_id

    @property
    def speaks_1_1(self) -> bool:
        """Whether the peer knows protocol 1.1's records (SETTLED, FORWARDED)."""
        return tuple(self.record.protocol) >= (1, 1)


@dataclass
class Call:
    """A request of ours waiting for its reply."""

    future: asyncio.Future[Any]
    peer: str  # the node that answers it
    recipient: AgentId | None


class MeshLink:
    """The mesh side of a node: see the module docstring."""

    def __init__(self, node: MeshNode, config: MeshConfig) -> None:
        self._node = node
        self._config = config
        self._transport: Transport | None = None
        self._membership: Membership | None = None
        self._peers: dict[str, Peer] = {}
        self._calls: dict[int, Call] = {}
        self._req_ids = itertools.count(1)
        self._inbound: dict[tuple[str, int], CancellationToken] = {}
        self._forwarded: OrderedDict[tuple[str, int], str] = OrderedDict()
        # Tokens of publishes from peers whose publisher may still cancel them (bounded, oldest out).
        self._publish_tokens: OrderedDict[tuple[str, str], CancellationToken] = OrderedDict()
        self._credit_flush_scheduled = False
        self._credit_timer: asyncio.TimerHandle | None = None
        # Credits go back once a quarter of a window is due (or after CREDIT_DELAY_S): a send
        # wakes libzmq's I/O thread, which costs more than a message on this hot path.
        self._credit_msgs_due = max(1, config.window_messages // 4)
        self._credit_bytes_due = max(1, config.window_bytes // 4)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead_notified: dict[str, float] = {}
        self._bad_log_at = 0.0
        self._bad_suppressed = 0
        self._peers_changed: asyncio.Event | None = None
        self.seeds: tuple[str, ...] = ()
        self.stats: dict[str, int] = {
            "bad_frames": 0,
            "frames_from_non_members": 0,
            "stale_frames": 0,
            "lost_in_flight": 0,
            "window_violations": 0,
            "forwarded": 0,
            "retried": 0,
            "refused_joins": 0,
        }

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def membership(self) -> Membership | None:
        return self._membership

    @property
    def transport(self) -> Transport | None:
        return self._transport

    async def bind(self, host: str, port: int) -> int:
        """Bind the node's socket. A node restarted on its old port may find it busy for a moment
        (libzmq releases a closed listener in its I/O thread): that is retried, briefly."""
        deadline = time.monotonic() + BIND_RETRY_S
        delay = 0.005
        while True:
            try:
                return self._bind(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port == 0 or time.monotonic() >= deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _bind(self, host: str, port: int) -> int:
        node = self._node
        self._loop = asyncio.get_running_loop()
        self._peers_changed = asyncio.Event()
        self._transport = Transport(
            node_id=node.node_id,
            incarnation=node.incarnation,
            config=self._config,
            on_frame=self._on_frame,
            on_bad_frame=self._on_bad_frame,
            **node._transport_options(),
        )
        try:
            return self._transport.bind(host, port)
        except BaseException:
            self._transport.close()
            self._transport = None
            raise

    async def join(self, me: MemberRecord, seeds: tuple[str, ...]) -> bool:
        self.seeds = seeds
        self._membership = Membership(me, self._config.membership, self, self._on_member_event)
        return await self._membership.start(seeds, self._config.join_timeout_s)

    def leave(self) -> None:
        # Credit what was handled first: on the same channel, ahead of the goodbye, so that the
        # senders do not count it lost.
        self._flush_credits()
        if self._membership is not None:
            self._membership.leave()
        if self._transport is not None:
            self._transport.flush()

    def close(self) -> None:
        if self._credit_timer is not None:
            self._credit_timer.cancel()
            self._credit_timer = None
        self._credit_flush_scheduled = False
        if self._membership is not None:
            self._membership.stop()
        for peer in list(self._peers.values()):
            self._drop_peer(peer, "this node stopped")
        self._fail_calls(lambda req_id, call: True, "this node stopped")
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._membership = None
        self._inbound.clear()
        self._forwarded.clear()

    def rejoin(self, incarnation: int) -> None:
        """Declared dead by the mesh while alive: come back under a new incarnation."""
        assert self._transport is not None and self._membership is not None
        for peer in list(self._peers.values()):
            self._drop_peer(peer, "this node was declared dead and rejoins")
        self._fail_calls(lambda req_id, call: True, "this node was declared dead by its peers and rejoined")
        self._transport.set_incarnation(incarnation)
        self._membership.rejoin(incarnation, self.seeds)

    # -- queries ----------------------------------------------------------------------------------

    def peers(self) -> list[Peer]:
        return list(self._peers.values())

    def peer(self, node_id: str) -> Peer | None:
        return self._peers.get(node_id)

    def infos(self) -> dict[str, NodeInfo]:
        return {n: p.info for n, p in self._peers.items()}

    async def wait_for_peers(self, n: int, timeout: float) -> None:
        assert self._peers_changed is not None
        async with asyncio.timeout(timeout):
            while len(self._peers) < n:
                self._peers_changed.clear()
                await self._peers_changed.wait()

    def unacknowledged(self) -> int:
        """Data records sent and not yet credited back, plus frames not yet written."""
        in_flight = sum(p.sent - p.credited for p in self._peers.values())
        pending = 0
        if self._transport is not None:
            pending = sum(self._transport.pending_frames(p.record.endpoint) for p in self._peers.values())
        return in_flight + pending + len(self._calls)

    # -- GossipChannel ----------------------------------------------------------------------------

    def send(self, member: MemberRecord, message: list[Any], *, handshake: bool) -> None:
        if self._transport is not None:
            self._transport.send(member.endpoint, member.incarnation, [wire.MEMBER, message], handshake=handshake)

    def send_to_endpoint(self, endpoint: str, message: list[Any]) -> None:
        if self._transport is None:
            return
        self._transport.send(endpoint, 0, [wire.MEMBER, message], handshake=True)
        # Connections to endpoints that are not members (seeds, knocks, notices) are few; close the
        # oldest beyond a bound, so that nothing a stranger names can pile sockets up.
        members = {p.record.endpoint for p in self._peers.values()}
        strangers = [e for e in self._transport.links() if e not in members]
        for old in strangers[: max(0, len(strangers) - MAX_STRANGER_LINKS)]:
            if old != endpoint:
                self._transport.close_link(old)

    # -- membership events ------------------------------------------------------------------------

    def _on_member_event(self, event: MembershipEvent) -> None:
        record = event.record
        kind = event.kind
        if kind in ("joined", "updated") and record is not None:
            old = self._peers.get(record.node_id)
            if old is not None and old.record.incarnation != record.incarnation:
                self._drop_peer(old, f"node {record.node_id} restarted (new incarnation)")
                old = None
            info = self._decode_info(record)
            if old is None:
                # The receiver decides how much it takes: start with the window it advertises.
                msgs, nbytes = info.window
                self._peers[record.node_id] = Peer(
                    record,
                    info,
                    credit_msgs=msgs or self._config.window_messages,
                    credit_bytes=nbytes or self._config.window_bytes,
                )
            else:
                old.record = record
                old.info = info
                old.status = MemberStatus.ALIVE
            self._node._view_changed()
        elif kind == "suspect" and record is not None:
            peer = self._peers.get(record.node_id)
            if peer is not None:
                peer.status = MemberStatus.SUSPECT
        elif kind in ("dead", "left") and record is not None:
            peer = self._peers.get(record.node_id)
            if peer is not None and peer.record.incarnation == record.incarnation:
                reason = "left the mesh" if kind == "left" else "was declared dead"
                self._drop_peer(peer, f"node {record.name} ({record.node_id}) {reason}")
                self._node._view_changed()
        elif kind == "self_dead":
            self._node._declared_dead()
        elif kind == "refused":
            self.stats["refused_joins"] += 1
            self._log_bad(f"membership refused: {event.detail}", "a peer")
        if self._peers_changed is not None:
            self._peers_changed.set()

    def _decode_info(self, record: MemberRecord) -> NodeInfo:
        try:
            return NodeInfo.decode(record.metadata)
        except ValueError as exc:
            logger.error("node %s sent metadata this node cannot read (%s): routing to it ignores it", record.name, exc)
            return NodeInfo()

    def _drop_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.node_id, None)
        lost = peer.sent - peer.credited
        if lost > 0:
            self.stats["lost_in_flight"] += lost
        error = compat(AgentUnreachableError)(reason)
        for waiter, _ in peer.waiters:
            if not waiter.done():
                waiter.set_exception(error)
        peer.waiters.clear()
        me = self._node.node_id
        # A call of ours that came back to us (the agent moved here) is answered here: keep it.
        self._fail_calls(lambda req_id, call: call.peer == peer.node_id and (me, req_id) not in self._inbound, reason)
        # Calls we forwarded to it will get no answer from it: answer them for it.
        for (origin, req_id), owner in list(self._forwarded.items()):
            if owner == peer.node_id:
                del self._forwarded[(origin, req_id)]
                self.reply(origin, req_id, wire.NOT_RUN, f"{reason} (the call was forwarded to it)")
        for key in [k for k in self._inbound if k[0] == peer.node_id]:
            self._inbound.pop(key).cancel()
        if self._transport is not None:
            self._transport.close_link(peer.record.endpoint)

    def _fail_calls(self, which: Callable[[int, Call], bool], reason: str) -> None:
        for req_id, call in list(self._calls.items()):
            if which(req_id, call):
                del self._calls[req_id]
                if not call.future.done():
                    target = f" ({call.recipient})" if call.recipient is not None else ""
                    call.future.set_exception(compat(AgentUnreachableError)(f"{reason}{target}"))

    # -- sending data -----------------------------------------------------------------------------

    def try_send_data(self, node_id: str, record: list[Any], size: int) -> bool | None:
        """Send a data record if the peer's window allows; False if the sender must wait, None if
        the peer is not (or no longer) a live member."""
        peer = self._peers.get(node_id)
        if peer is None:
            return None
        if peer.waiters or not self._has_credit(peer, size):
            return False
        self._take_credit(peer, size)
        assert self._transport is not None
        self._transport.send(peer.record.endpoint, peer.record.incarnation, record, size)
        return True

    @staticmethod
    def _has_credit(peer: Peer, size: int) -> bool:
        # A record larger than the byte window goes alone, when nothing else is in flight.
        return peer.credit_msgs > 0 and (size <= peer.credit_bytes or peer.sent == peer.credited)

    @staticmethod
    def _take_credit(peer: Peer, size: int) -> None:
        peer.credit_msgs -= 1
        peer.credit_bytes -= size
        peer.sent += 1

    async def send_data(self, node_id: str, record: list[Any], size: int) -> None:
        """Send a data record, waiting first-in first-out for credit when the window is full."""
        sent = self.try_send_data(node_id, record, size)
        if sent:
            return
        peer = self._peers.get(node_id)
        if peer is None or sent is None:
            raise compat(AgentUnreachableError)(f"node {node_id} is not a live member of the mesh")
        assert self._loop is not None
        waiter = self._loop.create_future()
        peer.waiters.append((waiter, size))
        timeout = self._config.send_timeout_s
        try:
            if timeout is None:
                await waiter
            else:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                pass  # credit arrived at the last moment: use it
            else:
                self._forget_waiter(peer, waiter, size)
                raise SendTimeoutError(
                    f"node {peer.record.name} gave no flow-control credit for {timeout} s "
                    f"(window {self._config.window_messages} messages / {self._config.window_bytes} bytes; "
                    "raise MeshConfig.send_timeout_s or speed up its handlers)"
                ) from None
        except asyncio.CancelledError:
            self._forget_waiter(peer, waiter, size)
            raise
        if self._peers.get(node_id) is not peer or self._transport is None:
            raise compat(AgentUnreachableError)(f"node {node_id} left while this message waited for credit")
        self._transport.send(peer.record.endpoint, peer.record.incarnation, record, size)

    def _forget_waiter(self, peer: Peer, waiter: asyncio.Future[None], size: int) -> None:
        for i, (w, _) in enumerate(peer.waiters):
            if w is waiter:
                del peer.waiters[i]
                return
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # The credit was reserved for us but we gave up: give it back.
            peer.credit_msgs += 1
            peer.credit_bytes += size
            peer.sent -= 1
            self._wake_waiters(peer)

    def _on_credit(self, peer: Peer, msgs: int, nbytes: int) -> None:
        if msgs > peer.sent - peer.credited:
            msgs = peer.sent - peer.credited  # a confused or hostile peer cannot inflate our window
        peer.credit_msgs += msgs
        peer.credit_bytes += nbytes
        peer.credited += msgs
        self._wake_waiters(peer)

    def _wake_waiters(self, peer: Peer) -> None:
        while peer.waiters:
            waiter, size = peer.waiters[0]
            if waiter.done():
                peer.waiters.popleft()
                continue
            if not self._has_credit(peer, size):
                break
            peer.waiters.popleft()
            self._take_credit(peer, size)
            waiter.set_result(None)

    def flush_if_alone(self) -> None:
        """Write what is queued now if nothing else is ready to run on the loop: a lone request
        then leaves at once, while requests made in a burst still share a frame."""
        if self._transport is not None and self._loop is not None and not getattr(self._loop, "_ready", True):
            self._transport.flush()

    def send_control(self, node_id: str, record: list[Any]) -> bool:
        peer = self._peers.get(node_id)
        if peer is None or self._transport is None:
            return False
        self._transport.send(peer.record.endpoint, peer.record.incarnation, record)
        return True

    # -- calls ------------------------------------------------------------------------------------

    def new_call(self, node_id: str, recipient: AgentId | None) -> tuple[int, asyncio.Future[Any]]:
        peer = self._peers.get(node_id)
        if peer is None:
            raise compat(AgentUnreachableError)(f"node {node_id} is not a live member of the mesh")
        assert self._loop is not None
        req_id = next(self._req_ids)
        future = self._loop.create_future()
        self._calls[req_id] = Call(future, node_id, recipient)
        return req_id, future

    def forget_call(self, req_id: int) -> None:
        self._calls.pop(req_id, None)

    def cancel_call(self, req_id: int) -> None:
        """The caller gave up (cancelled or timed out): tell the handler's node."""
        call = self._calls.pop(req_id, None)
        if call is not None:
            self.send_control(call.peer, [wire.CANCEL, req_id, self._node.node_id])
        returned = self._inbound.get((self._node.node_id, req_id))
        if returned is not None:  # our own call, forwarded back to us and running here
            returned.cancel()

    def register_inbound(self, origin: str, req_id: int, token: CancellationToken) -> None:
        self._inbound[(origin, req_id)] = token

    def finish_inbound(self, origin: str, req_id: int) -> None:
        self._inbound.pop((origin, req_id), None)

    def reply(self, origin: str, req_id: int, status: int, a: Any = None, b: Any = None, c: Any = None) -> None:
        if origin == self._node.node_id:
            # Our own call, forwarded back to us (the agent moved here): answer it in place.
            call = self._calls.pop(req_id, None)
            if call is not None and not call.future.done():
                self._node._complete_call(call.future, status, a, b, c)
            return
        if not self.send_control(origin, [wire.REPLY, req_id, status, a, b, c]):
            logger.debug("reply %d to %s dropped: the caller is not a live member", req_id, origin)
        elif self._transport is not None and self._node._dispatcher.queued == 0:
            # Nothing else is coming soon to batch it with: write it now, not a loop turn later.
            self._transport.flush()

    def publish_token(self, origin: str, message_id: str) -> CancellationToken:
        token = CancellationToken()
        self._publish_tokens[(origin, message_id)] = token
        if len(self._publish_tokens) > MAX_FORWARDED:
            self._publish_tokens.popitem(last=False)
        return token

    def remember_forward(self, origin: str, req_id: int, owner: str) -> None:
        self._forwarded[(origin, req_id)] = owner
        if len(self._forwarded) > MAX_FORWARDED:
            self._forwarded.popitem(last=False)

    # -- receiving --------------------------------------------------------------------------------

    def _on_bad_frame(self, reason: str, rid: bytes) -> None:
        self.stats["bad_frames"] += 1
        if reason == "addressed to another incarnation":
            self.stats["stale_frames"] += 1
        self._log_bad(reason, rid[:64].hex())

    def _log_bad(self, reason: str, peer: str) -> None:
        now = time.monotonic()
        if now >= self._bad_log_at:
            suppressed = f" ({self._bad_suppressed} more since the last report)" if self._bad_suppressed else ""
            logger.warning("dropped a bad frame from %s: %s%s", peer, reason, suppressed)
            self._bad_log_at = now + self._config.bad_frame_log_interval_s
            self._bad_suppressed = 0
        else:
            self._bad_suppressed += 1

    def _on_frame(self, node_id: str, incarnation: int, cls: int, body: memoryview) -> None:
        membership = self._membership
        if membership is None:
            return
        peer = self._peers.get(node_id)
        if peer is None or peer.record.incarnation != incarnation:
            status = membership.status_of(node_id, incarnation)
            if cls != wire.CLS_HANDSHAKE:
                # Dropped before its body is decoded: the sender never joined, or is gone.
                self.stats["frames_from_non_members"] += 1
                if status is not None and status.gone:
                    self._tell_dead(node_id, incarnation)
                return
            if peer is not None and peer.record.incarnation > incarnation:
                self.stats["stale_frames"] += 1  # an older incarnation of a member: its claims are stale
                return
            self._on_handshake(node_id, body)
            return
        assert self._transport is not None
        try:
            records = wire.decode_records(body, node_id, self._transport.frame_limit)
        except FrameDecodeError as exc:
            self.stats["bad_frames"] += 1
            self._log_bad(str(exc), node_id)
            return
        for record in records:
            try:
                self._on_record(peer, record)
            except FrameDecodeError as exc:
                self.stats["bad_frames"] += 1
                self._log_bad(str(exc), peer.record.name)
            except (ValueError, TypeError) as exc:
                self.stats["bad_frames"] += 1
                self._log_bad(f"malformed record: {exc}", peer.record.name)

    def _on_handshake(self, node_id: str, body: memoryview) -> None:
        assert self._transport is not None and self._membership is not None
        # A stranger's frame: its records must stay about the size of their bytes once decoded
        # (a full membership state has about one list per hundred bytes).
        budget = 256 + len(body) // 16
        try:
            records = wire.decode_records(body, node_id, self._transport.frame_limit, budget)
        except FrameDecodeError as exc:
            self.stats["bad_frames"] += 1
            self._log_bad(str(exc), node_id)
            return
        # Only called for senders that are not (this incarnation of) a member: they speak as strangers.
        for record in records[:64]:
            if isinstance(record, list) and len(record) == 2 and record[0] == wire.MEMBER:
                self._membership.receive(None, record[1])
            else:
                self.stats["bad_frames"] += 1

    def _tell_dead(self, node_id: str, incarnation: int) -> None:
        """A node we declared dead still talks to us: tell it, at most once a second, so it rejoins."""
        assert self._membership is not None
        now = time.monotonic()
        if now - self._dead_notified.get(node_id, 0.0) < 1.0:
            return
        record = self._membership.record_of(node_id)
        if record is None or record.incarnation != incarnation:
            return  # a frame from an incarnation already replaced by a newer one: it knows, drop it
        self._dead_notified[node_id] = now
        notice = self._membership.dead_notice(node_id)
        if notice is not None and self._transport is not None:
            self._transport.send(record.endpoint, incarnation, [wire.MEMBER, notice], handshake=True)

    def _on_record(self, peer: Peer, record: Any) -> None:
        if not isinstance(record, list) or not record:
            raise FrameDecodeError("a record must be a non-empty list")
        kind = record[0]
        if kind in wire.DATA_KINDS:
            size = _record_size(record)
            if peer.received_uncredited >= self._config.window_messages * 2:
                # The sender ignores our window: drop rather than buffer without bound.
                peer.window_violations += 1
                self.stats["window_violations"] += 1
                raise FrameDecodeError("data beyond the flow-control window")
            peer.received_uncredited += 1
            if peer.held or self._node._dispatcher.saturated:
                peer.held.append((record, size))
                self._node._dispatcher.notify_room(self._release_held)
                return
            self._accept_data(peer, record, size)
        elif kind == wire.REPLY:
            self._on_reply(peer, record)
        elif kind == wire.CREDIT:
            if len(record) != 3:
                raise FrameDecodeError("CREDIT must have 3 fields")
            self._on_credit(peer, wire._int(record[1], "credit"), wire._int(record[2], "credit bytes"))
        elif kind == wire.MEMBER:
            if len(record) != 2:
                raise FrameDecodeError("MEMBER must have 2 fields")
            assert self._membership is not None
            self._membership.receive(peer.node_id, record[1])
        elif kind == wire.CANCEL:
            self._on_cancel(peer, record)
        elif kind == wire.FORWARDED:
            self._on_forwarded(peer, record)
        elif kind == wire.CANCEL_PUBLISH:
            if len(record) < 3:
                raise FrameDecodeError("CANCEL_PUBLISH must have 3 fields")
            token = self._publish_tokens.pop((peer.node_id, wire._str(record[1], "message id")), None)
            if token is not None:
                token.cancel()
        elif kind in (wire.AGENT_OP, wire.HANDOVER, wire.STATS, wire.SETTLED):
            self._node._accept_control(peer, record)
        else:
            raise FrameDecodeError(f"unknown record kind {kind!r}")

    def _accept_data(self, peer: Peer, record: list[Any], size: int) -> None:
        try:
            if record[0] == wire.PUBLISH:
                self._node._accept_publish(peer, record)
            else:
                self._node._accept_rpc(peer, record)
        finally:
            peer.received_uncredited -= 1
            peer.due_msgs += 1
            peer.due_bytes += size
            loop = self._loop
            if loop is not None and not self._credit_flush_scheduled:
                if peer.due_msgs >= self._credit_msgs_due or peer.due_bytes >= self._credit_bytes_due:
                    self._credit_flush_scheduled = True
                    loop.call_soon(self._flush_credits)
                elif self._credit_timer is None:
                    self._credit_timer = loop.call_later(CREDIT_DELAY_S, self._flush_credits)

    def _release_held(self) -> None:
        dispatcher = self._node._dispatcher
        for peer in list(self._peers.values()):
            while peer.held and not dispatcher.saturated:
                record, size = peer.held.popleft()
                try:
                    self._accept_data(peer, record, size)
                except (FrameDecodeError, ValueError, TypeError) as exc:
                    self.stats["bad_frames"] += 1
                    self._log_bad(str(exc), peer.record.name)
            if peer.held:
                dispatcher.notify_room(self._release_held)
                return

    def _flush_credits(self) -> None:
        self._credit_flush_scheduled = False
        if self._credit_timer is not None:
            self._credit_timer.cancel()
            self._credit_timer = None
        for peer in self._peers.values():
            if peer.due_msgs:
                self.send_control(peer.node_id, [wire.CREDIT, peer.due_msgs, peer.due_bytes])
                peer.due_msgs = 0
                peer.due_bytes = 0

    def _on_reply(self, peer: Peer, record: list[Any]) -> None:
        if len(record) != 6:
            raise FrameDecodeError("REPLY must have 6 fields")
        req_id = wire._int(record[1], "request id")
        # A forwarded call is answered by the owner, not by the node it was sent to.
        call = self._calls.pop(req_id, None)
        if call is None:
            return  # the caller gave up already
        if not call.future.done():
            self._node._complete_call(call.future, record[2], record[3], record[4], record[5])

    def took_forwarded(self, origin: str, req_id: int, recipient: AgentId) -> None:
        """A call forwarded to this node is registered here: tell its caller, which then waits on
        this node (it fails if this node dies; it no longer fails if a forwarder leaves)."""
        peer = self._peers.get(origin)
        if peer is not None and peer.speaks_1_1:
            self.send_control(origin, [wire.FORWARDED, req_id, recipient.type, recipient.key])

    def _on_forwarded(self, peer: Peer, record: list[Any]) -> None:
        if len(record) != 4:
            raise FrameDecodeError("FORWARDED must have 4 fields")
        req_id = wire._int(record[1], "request id")
        recipient = wire.agent_id_from_wire([record[2], record[3]], "recipient")
        call = self._calls.get(req_id)
        if call is None or call.recipient != recipient:
            return  # answered already, or not that call
        call.peer = peer.node_id

    def _on_cancel(self, peer: Peer, record: list[Any]) -> None:
        if len(record) != 3:
            raise FrameDecodeError("CANCEL must have 3 fields")
        req_id = wire._int(record[1], "request id")
        origin = wire._str(record[2], "origin")
        token = self._inbound.get((origin, req_id))
        if token is not None:
            token.cancel()
            return
        owner = self._forwarded.pop((origin, req_id), None)
        if owner is not None:
            self.send_control(owner, [wire.CANCEL, req_id, origin])


def _record_size(record: list[Any]) -> int:
    payload = record[8] if len(record) > 8 else b""
    return (len(payload) if isinstance(payload, bytes) else 0) + 128
