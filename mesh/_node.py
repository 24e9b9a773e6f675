"""MeshNode: one node of the mesh, and a complete agent runtime on its own."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import itertools
import logging
import os
import signal
import socket
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, overload

import msgpack

from discovery import MemberRecord, is_valid_endpoint, is_valid_node_id

from . import _codec as wire
from . import _errors
from ._agent import Agent, AgentMetadata
from ._agents import LocalAgents, is_autogen_object, is_foreign_class
from ._cancellation import CancellationToken
from ._codec import Body, FrameDecodeError
from ._config import MeshConfig
from ._context import MessageHandlerContext
from ._dispatch import Dispatcher, WorkItem
from ._errors import (
    AgentTypeConflictError,
    AgentUnreachableError,
    MessageDroppedException,
    MessageTooLargeError,
    NodeStoppedError,
    NotAccessibleError,
    RetryableRoutingError,
    SendTimeoutError,
    UnknownAgentTypeError,
    compat,
)
from ._ids import AgentId, AgentType, TopicId, is_valid_agent_type
from ._intervention import DropMessage, InterventionHandler
from ._link import MeshLink, Peer
from ._message_context import MessageContext
from ._routing import NodeInfo, RoutingTable, SubInfo, TypeInfo
from ._security import CurveSecurity
from ._serialization import MessageSerializer, SerializerRegistry, UnknownPayload
from ._subscriptions import Subscription, TypePrefixSubscription, TypeSubscription

logger = logging.getLogger("mesh")

T = TypeVar("T", bound=Agent)

# The id of the agent whose handler runs (the same variable MessageHandlerContext reads).
_HANDLER_VAR: ContextVar[Any] = MessageHandlerContext._MESSAGE_HANDLER_CONTEXT
_RETRY = object()
LATENCY_SAMPLES = 1024  # remote calls whose round trip statistics() summarises
RPC_RETRIES = 3  # a call the receiver does not own in its view is retried after the views resync
# Agents this node handed over, remembered (with their takers) so that messages for them that
# reach this node late follow them instead of making a fresh copy here: bounded, oldest dropped.
MAX_MOVED_OUT = 100_000
# A message passed on after a move follows at most this many moves made in quick succession (the
# bound also ends any loop between stale records).
MOVED_HOPS = 3
MAX_SETTLED_TYPES = 10_000  # agent types one SETTLED record may name
# A window counts as ended this close to its end: the loop may run its timer that early.
SETTLE_CLOCK_SLACK_S = 0.02
_warned_insecure_bind = False


@dataclass(frozen=True, slots=True)
class _MovedTo:
    """The answer of a local call whose agent moved to ``taker`` meanwhile: call it there."""

    taker: str


@dataclass(frozen=True)
class PeerInfo:
    """A live peer as this node sees it."""

    node_id: str
    name: str
    address: str
    incarnation: int
    status: str
    agent_types: Mapping[str, str]
    subscriptions: tuple[SubInfo, ...]
    capabilities: frozenset[str] = frozenset()


def _warn_if_none(value: Any, handler_name: str) -> None:
    if value is None:
        warnings.warn(
            f"Intervention handler {handler_name} returned None. This might be unintentional. "
            "Consider returning the original message or DropMessage explicitly.",
            RuntimeWarning,
            stacklevel=3,
        )


# The mesh name travels in every member record and in one mDNS TXT string ("mesh=NAME", at most 255
# bytes): well inside both.
MAX_MESH_NAME_BYTES = 128


def _is_valid_mesh_name(mesh: object) -> bool:
    return (
        isinstance(mesh, str)
        and 0 < len(mesh.encode("utf-8", "surrogatepass")) <= MAX_MESH_NAME_BYTES
        and mesh.isprintable()
    )


def _is_drop(value: Any) -> bool:
    if value is DropMessage or isinstance(value, DropMessage):
        return True
    # autogen_core's own DropMessage, when autogen_core agents run here.
    cls = value if isinstance(value, type) else type(value)
    return cls.__name__ == "DropMessage" and cls.__module__.startswith("autogen_core")


def _adapt_intervention(handler: Any) -> Any:
    if is_foreign_class(type(handler)):
        from . import autogen as _autogen

        return _autogen.InterventionAdapter(handler)
    return handler


def _forget_callback(token: Any, callback: Callable[[], None]) -> None:
    # autogen_core's CancellationToken has no remove_callback: its callbacks stay (harmless).
    remove = getattr(token, "remove_callback", None)
    if remove is not None:
        remove(callback)


def coerce_agent_id(value: Any) -> AgentId:
    """A mesh AgentId for ``value`` (an AgentId of mesh, of autogen_core, or anything with type and key)."""
    if isinstance(value, AgentId):
        return value
    try:
        return AgentId(value.type, value.key)
    except AttributeError:
        raise TypeError(f"expected an AgentId, got {type(value).__name__}") from None


def coerce_topic_id(value: Any) -> TopicId:
    if isinstance(value, TopicId):
        return value
    try:
        return TopicId(value.type, value.source)
    except AttributeError:
        raise TypeError(f"expected a TopicId, got {type(value).__name__}") from None


def coerce_subscription(sub: Any) -> Any:
    """Turn autogen_core's Type/TypePrefix/Default subscriptions into the mesh's (same id)."""
    if isinstance(sub, TypeSubscription | TypePrefixSubscription):
        return sub
    if is_autogen_object(sub):
        prefix = getattr(sub, "topic_type_prefix", None)
        if isinstance(prefix, str):
            return TypePrefixSubscription(prefix, sub.agent_type, id=sub.id)
        topic_type = getattr(sub, "topic_type", None)
        if isinstance(topic_type, str):
            return TypeSubscription(topic_type, sub.agent_type, id=sub.id)
    return sub


def _sub_info(sub: Any) -> SubInfo | None:
    if isinstance(sub, TypeSubscription):
        return SubInfo("type", sub.topic_type, sub.agent_type, sub.id)
    if isinstance(sub, TypePrefixSubscription):
        return SubInfo("prefix", sub.topic_type_prefix, sub.agent_type, sub.id)
    return None


def _overrides(agent: Any, method: str) -> bool:
    """Whether the agent's class implements ``method`` itself (BaseAgent's default only warns)."""
    impl = getattr(type(agent), method, None)
    return impl is not None and getattr(impl, "__qualname__", "") != f"BaseAgent.{method}"


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _advertised_host(host: str, advertise: str | None, interfaces: Sequence[str] | None = None) -> str:
    """The address peers should dial: ``advertise``, the bound address, or for a wildcard bind the
    first non-loopback address of the interfaces mDNS uses (never a wildcard)."""
    if advertise:
        return advertise
    if host not in ("0.0.0.0", "*", "::", ""):
        return host
    from discovery import local_addresses_for

    for address in local_addresses_for(interfaces, ipv6=host == "::"):
        if not ipaddress.ip_address(address).is_loopback:
            return address
    # No LAN address on these interfaces: only this machine can reach the node.
    return "::1" if host == "::" else "127.0.0.1"


def _endpoint(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class MeshNode:
    """One node of the mesh: an AutoGen-compatible agent runtime that routes to its peers.

    With no peers it is a complete local runtime with the semantics of autogen_core's
    ``SingleThreadedAgentRuntime``. Use it as ``async with MeshNode(...) as node:``, or call
    ``await node.start()`` and ``await node.stop()``.

    Args:
        name: a human-readable name shown by ``agentmesh peers`` (default: host name and pid).
        mesh: the mesh name; nodes only join nodes of the same mesh name.
        host: the address to bind (loopback by default).
        port: the port to bind (0 picks a free one).
        advertise: the address peers should connect to, if not the bound one.
        seeds: endpoints (``tcp://host:port``) of nodes to join through.
        discovery: ``"mdns"`` to find peers on the LAN, ``"none"`` to use seeds only.
        mdns_interfaces: interface names or addresses mDNS uses (env ``AGENTMESH_MDNS_INTERFACES``).
        intervention_handlers: called on each message submitted on this node, as in AutoGen.
        ignore_unhandled_exceptions: when False, an exception from a publish handler is raised
            again by the next ``stop()``, ``stop_when_idle()`` or ``stop_when()``.
        rpc_timeout_s: default bound on ``send_message`` (None: no limit).
        node_id: a stable id for this node (default: random); keep it across restarts of one
            deployment so that it owns the same agent keys again.
        config: sizes and timings (see :class:`MeshConfig`).
        secret_key_file: this node's CURVE secret key file (env ``AGENTMESH_SECRET_KEY_FILE``);
            turns on encryption and authentication of every connection. Alone, it is the one key
            shared by the whole mesh.
        authorized_keys_dir: a directory of the public keys this node admits (env
            ``AGENTMESH_AUTHORIZED_KEYS_DIR``), for per-node keys; seeds then name their server key
            as ``tcp://host:port#<z85 key>``.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        mesh: str = "default",
        host: str = "127.0.0.1",
        port: int = 0,
        advertise: str | None = None,
        seeds: Sequence[str] = (),
        discovery: str = "mdns",
        mdns_interfaces: Sequence[str] | None = None,
        intervention_handlers: list[InterventionHandler] | None = None,
        ignore_unhandled_exceptions: bool = True,
        rpc_timeout_s: float | None = None,
        node_id: str | None = None,
        config: MeshConfig | None = None,
        secret_key_file: str | os.PathLike[str] | None = None,
        authorized_keys_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if discovery not in ("mdns", "none"):
            raise ValueError(f"discovery must be 'mdns' or 'none', not {discovery!r}")
        if not _is_valid_mesh_name(mesh):
            raise ValueError(
                f"mesh name must be 1-{MAX_MESH_NAME_BYTES} bytes of UTF-8 without control characters: {mesh!r}"
            )
        if node_id is not None and not is_valid_node_id(node_id):
            raise ValueError(f"node_id must be 1-64 characters of letters, digits, '_', '.', '-': {node_id!r}")
        if isinstance(seeds, str):
            raise TypeError("seeds must be a sequence of endpoints, not one string")
        for seed in seeds:
            if not is_valid_endpoint(seed):
                raise ValueError(
                    f"seed {seed!r} must be a ZeroMQ TCP endpoint such as tcp://10.0.0.5:7400 (a host name, an IPv4 "
                    "address or an [IPv6] address, a port 1-65535, and with per-node keys #<z85 server key>)"
                )
        if advertise and not is_valid_endpoint(_endpoint(advertise, 1)):
            raise ValueError(f"advertise={advertise!r} must be a host name or an IP address that peers can dial")
        self._security = CurveSecurity.from_options(secret_key_file, authorized_keys_dir)
        if self._security is not None:
            for seed in seeds:
                self._security.server_key_for(seed)  # a seed must name a server key this node trusts
        self._config = config or MeshConfig()
        self._node_id = node_id or uuid.uuid4().hex
        self._name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._mesh_name = mesh
        self._host = host
        self._port = port
        self._autogen_flavoured = False  # set once autogen_core agents or types are registered here
        self._port_chosen = port != 0  # a port the user named is kept; a free one may change on restart
        self._advertise = advertise
        self._seeds = tuple(seeds)
        self._discovery_mode = discovery
        self._mdns_interfaces = tuple(mdns_interfaces) if mdns_interfaces is not None else None
        self._interventions = [_adapt_intervention(h) for h in intervention_handlers or ()]
        self._ignore_unhandled = ignore_unhandled_exceptions
        self._rpc_timeout_s = rpc_timeout_s if rpc_timeout_s is not None else self._config.rpc_timeout_s
        self._incarnation = 0
        self._address: str | None = None

        self._agents = LocalAgents(self)
        self._serializers = SerializerRegistry()
        self._allowed_errors: dict[str, type[BaseException]] = _default_error_allow_list()
        self._subscriptions: list[Any] = []
        self._custom_subscriptions: list[Any] = []
        self._warned_custom = False
        self._dispatcher = Dispatcher(max_workers=self._config.max_running_handlers, max_queued=self._config.max_queued)
        self._link = MeshLink(self, self._config)
        self._capabilities: set[str] = set()
        self._info = self._local_info()
        self._table_now = RoutingTable({self._node_id: self._info})
        self._table_stale = False
        self._view_scheduled = False
        self._view = 0
        self._view_event: asyncio.Event | None = None
        self._running = False
        self._leaving = False
        self._start_task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._background_exception: BaseException | None = None
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Agents being handed over, each with the messages that reached it meanwhile (their work
        # items): they run here if it stays, else they follow it (_pass_on).
        self._moving: dict[AgentId, list[WorkItem]] = {}
        self._handovers: set[asyncio.Task[bool]] = set()  # begun by _check_ownership, awaited on stop
        # Agents handed over from here: their takers (node id, incarnation), see MAX_MOVED_OUT.
        self._moved_out: OrderedDict[AgentId, tuple[str, int]] = OrderedDict()
        # While this node leaves: peers that refused a handover because they leave too (left out
        # of its routing), and handovers it is still taking in (it hands those on before it goes).
        self._refusing: set[str] = set()
        self._receiving = 0
        # Settling (one instance per key across a join): after this node starts hosting an agent
        # type, a message for an agent of it that is not live here waits until every other node
        # hosting the type has said it handed over what this node now owns (SETTLED), or until
        # the type's window (settle_timeout_s) ends; only then is the agent created afresh here.
        self._settle_until: dict[str, float] = {}  # agent type -> loop time its window ends
        self._settled_by: dict[str, set[str]] = {}  # agent type -> peers that said SETTLED
        self._unsettled: dict[AgentId, list[WorkItem]] = {}
        # What this node said SETTLED for: peer -> (the peer's incarnation, agent types).
        self._settled_sent: dict[str, tuple[int, frozenset[str]]] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        self._settle_event = asyncio.Event()  # set (and replaced) whenever waiting may have ended
        self._received = asyncio.Event()
        self._mdns: Any = None
        self._view_listeners: list[Callable[[], None]] = []
        # Round trips of the last remote calls (seconds), for statistics(): a ring, no allocation.
        self._latencies: list[float] = [0.0] * LATENCY_SAMPLES
        self._latency_count = 0
        self._stats: dict[str, int] = {
            "published": 0,
            "sent": 0,
            "delivered": 0,
            "handler_errors": 0,
            "undeliverable": 0,
            "dropped_by_intervention": 0,
            "bad_payloads": 0,
            "handed_over": 0,
            "handover_conflicts": 0,
            "held_for_handover": 0,
            "rejoined": 0,
        }

    # -- identity ---------------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        """Stable for the life of this object."""
        return self._node_id

    @property
    def incarnation(self) -> int:
        """Changes at every start (0 before the first)."""
        return self._incarnation

    @property
    def name(self) -> str:
        return self._name

    @property
    def mesh(self) -> str:
        return self._mesh_name

    @property
    def address(self) -> str | None:
        """The advertised endpoint (``tcp://host:port``), known after start."""
        return self._address

    @property
    def config(self) -> MeshConfig:
        return self._config

    @property
    def running(self) -> bool:
        return self._running

    @property
    def unprocessed_messages_count(self) -> int:
        return self._dispatcher.queued

    @property
    def peers(self) -> list[PeerInfo]:
        """A snapshot of the live peers with their decoded metadata."""
        return [
            PeerInfo(
                node_id=p.node_id,
                name=p.record.name,
                address=p.record.endpoint,
                incarnation=p.record.incarnation,
                status=p.status.name.lower(),
                agent_types={t: info.kind for t, info in p.info.types.items()},
                subscriptions=p.info.subscriptions,
                capabilities=p.info.capabilities,
            )
            for p in self._link.peers()
        ]

    async def wait_for_peers(self, n: int, timeout: float = 10.0) -> None:
        """Return once ``n`` peers are joined and their metadata is known.

        Raises:
            TimeoutError: fewer than ``n`` peers after ``timeout`` seconds.
        """
        if not self._running:
            raise NodeStoppedError("the node is not running: call `await node.start()` first")
        try:
            await self._link.wait_for_peers(n, timeout)
        except TimeoutError:
            raise TimeoutError(f"{len(self._link.peers())} of {n} peers joined within {timeout} s") from None

    def statistics(self) -> dict[str, Any]:
        """Counters of this node: messages, errors, losses, queue depth, membership."""
        stats: dict[str, Any] = dict(self._stats)
        stats.update(self._link.stats)
        transport = self._link.transport
        if transport is not None:
            stats.update(transport.stats)
        membership = self._link.membership
        stats["local_health"] = membership.local_health if membership is not None else 0
        stats["bad_membership_messages"] = membership.bad_messages if membership is not None else 0
        stats["failed_membership_actions"] = membership.failed_actions if membership is not None else 0
        stats["queued"] = self._dispatcher.queued
        stats["running_handlers"] = self._dispatcher.busy
        stats["agents"] = len(self._agents.instances)
        stats["peers"] = len(self._link.peers())
        stats["unacknowledged"] = self._link.unacknowledged()
        samples = sorted(self._latencies[: min(self._latency_count, LATENCY_SAMPLES)])
        if samples:
            stats["rpc_latency_p50_us"] = round(samples[len(samples) // 2] * 1e6, 1)
            stats["rpc_latency_p99_us"] = round(samples[min(len(samples) - 1, len(samples) * 99 // 100)] * 1e6, 1)
        return stats

    @property
    def routing_table(self) -> RoutingTable:
        """This node's current view of who hosts what (rebuilt, never mutated, on every change)."""
        return self._table

    async def add_capability(self, name: str) -> None:
        """Advertise a capability (e.g. ``"bridge"``) in this node's gossiped metadata."""
        self._capabilities.add(name)
        await self._registrations_changed()

    async def remove_capability(self, name: str) -> None:
        self._capabilities.discard(name)
        await self._registrations_changed()

    def add_view_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change of the routing view (membership or registrations)."""
        self._view_listeners.append(listener)

    def remove_view_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._view_listeners:
            self._view_listeners.remove(listener)

    def register_exception_type(self, cls: type[BaseException]) -> None:
        """Let errors of type ``cls`` raised by remote handlers be rebuilt as ``cls`` here
        (otherwise they arrive as :class:`RemoteAgentError`)."""
        self._allowed_errors[f"{cls.__module__}.{cls.__qualname__}"] = cls

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the node. Await the result: it completes once the node is bound and has synced
        with its peers. Calling it without ``await`` (as with SingleThreadedAgentRuntime) also
        starts the node, in the background."""
        if self._start_task is not None and not self._start_task.done():
            return self._start_task
        if self._running:
            raise RuntimeError("Runtime is already started")
        # A failure reaches whoever awaits this task; if nobody does, asyncio reports it.
        self._start_task = asyncio.get_running_loop().create_task(self._start(), name=f"mesh-start-{self._name}")
        return self._start_task

    def _transport_options(self) -> dict[str, Any]:
        """Extra transport arguments: a secured node has its own context and sets up CURVE."""
        if self._security is None:
            return {}
        return {
            "context": self._security.context,
            "socket_setup": self._security.setup_socket,
            "client_allowed": self._security.allows_client,
        }

    @property
    def public_key(self) -> str | None:
        """This node's CURVE public key (z85), when security is on."""
        return self._security.public_key.decode() if self._security is not None else None

    def reload_authorized_keys(self) -> None:
        """Read the authorized keys directory again (after adding or removing a node's key).

        A peer whose key is no longer allowed is cut off at once: held dead here, it must connect
        again, and the new handshake refuses it (ZeroMQ checks keys only when a connection opens).
        """
        if self._security is None:
            return
        self._security.reload()
        membership = self._link.membership
        for peer in self._link.peers():
            if not self._security.allows_endpoint(peer.record.endpoint) and membership is not None:
                logger.warning("node %s's key is no longer allowed: cutting it off", peer.record.name)
                membership.evict(peer.node_id)

    @property
    def agent_types(self) -> dict[str, str]:
        """The agent types registered on this node: type -> "factory" or "instance"."""
        return {name: info.kind for name, info in self._info.types.items()}

    async def _start(self) -> None:
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
        self._incarnation = max(self._incarnation + 1, time.time_ns() // 1_000_000)
        self._leaving = False
        self._refusing.clear()
        self._view_event = asyncio.Event()
        self._received = asyncio.Event()  # of this loop (a restart may run on another one)
        self._settle_event = asyncio.Event()
        if self._security is not None:
            self._security.start()
        try:
            port = await self._bind()
        except BaseException:
            if self._security is not None:
                self._security.stop()
            raise
        self._port = port  # a restarted node keeps its address when it can (see _bind)
        self._address = _endpoint(_advertised_host(self._host, self._advertise, self._mdns_interfaces), port)
        if self._security is not None:
            self._address += "#" + self._security.public_key.decode()
        self._warn_if_exposed()
        self._dispatcher.start()
        self._running = True
        self._open_settling(self._agents.factories)
        me = MemberRecord(
            self._node_id,
            self._incarnation,
            0,
            self._address,
            self._name,
            self._mesh_name,
            (wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR),
            self._info.encode(),
        )
        synced = await self._link.join(me, self._seeds)
        if self._seeds and not synced:
            logger.warning(
                "no seed of %s answered within %.1f s; this node keeps trying to join in the background",
                ", ".join(self._seeds),
                self._config.join_timeout_s,
            )
        self._view_changed()
        if self._discovery_mode == "mdns":
            await self._start_mdns(port)
        logger.info("node %s started at %s (incarnation %d)", self._name, self._address, self._incarnation)

    async def _bind(self) -> int:
        """Bind the node's socket: on a restart, the port it had before. Another socket may have
        taken that port meanwhile (any local connect can get it as its ephemeral port); a port the
        user named then fails loudly, a free port picked for the node is replaced by another."""
        try:
            return await self._link.bind(self._host, self._port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self._port_chosen or self._port == 0:
                raise
            logger.info("node %s: port %d was taken while it was stopped; binding a new one", self._name, self._port)
            return await self._link.bind(self._host, 0)

    async def _start_mdns(self, port: int) -> None:
        from discovery import MdnsDiscovery

        def found(endpoint: str) -> None:
            membership = self._link.membership
            if membership is not None:
                membership.contact(endpoint)

        self._mdns = MdnsDiscovery(
            node_id=self._node_id,
            mesh=self._mesh_name,
            protocol=(wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR),
            port=port,
            on_peer=found,
            interfaces=self._mdns_interfaces,
            bound_host=self._host,
            public_key=self.public_key,
        )
        await self._mdns.start()

    def _warn_if_exposed(self) -> None:
        global _warned_insecure_bind
        if not _is_loopback(self._host) and not self._secured() and not _warned_insecure_bind:
            _warned_insecure_bind = True
            logger.warning(
                "node %s binds %s without security: anyone who can reach it can join the mesh, publish and "
                "call agents; configure CURVE keys (see the README, Security)",
                self._name,
                self._host,
            )

    def _secured(self) -> bool:
        return self._security is not None

    async def stop(self) -> None:
        """Stop gracefully: hand live agents over to their next owners and finish queued and
        running handlers, both within ``config.stop_timeout_s``, tell the mesh this node leaves,
        then fail whatever is left with a clear error. Idempotent; the node can be started again
        afterwards (new incarnation, registrations and subscriptions kept).

        Agents that no node staying in the mesh takes over (every node hosting their type leaves
        too) stay on this stopped node with their state, and a warning names them."""
        if self._start_task is not None and not self._start_task.done():
            await asyncio.wait([self._start_task])
        if not self._running:
            if self._stopping is not None:
                await asyncio.shield(self._stopping)
            self._raise_background_exception()
            return
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())
        try:
            await asyncio.shield(self._stopping)
        finally:
            self._stopping = None
        self._raise_background_exception()

    async def _stop(self) -> None:
        loop = asyncio.get_running_loop()
        # One deadline for the handovers and the handlers: stop() ends within stop_timeout_s
        # (plus the cancellation of what is still running then).
        deadline = loop.time() + self._config.stop_timeout_s
        if self._link.peers():
            # Route around this node from now on, and hand its live agents to their new owners.
            self._leaving = True
            self._view_changed()
            self._end_settling()  # what waits goes to the agents' new owners
            await self._hand_over_all(deadline)
        else:
            self._end_settling()  # what waits runs here
        if self._mdns is not None:
            await self._mdns.close()
            self._mdns = None
        finished = await self._dispatcher.drain(max(0.0, deadline - loop.time()))
        if not finished:
            logger.warning("stop: handlers still running after %.1f s were cancelled", self._config.stop_timeout_s)
        self._link.leave()
        for item in await self._dispatcher.stop():
            self._fail_item(item)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._link.close()
        if self._security is not None:
            self._security.stop()
        self._running = False
        self._leaving = False
        self._refusing.clear()
        self._moved_out.clear()
        self._settled_sent.clear()
        self._end_settling()
        self._table_now = RoutingTable({self._node_id: self._info})
        self._table_stale = False

    def _fail_item(self, item: WorkItem) -> None:
        """A queued or held item that never started because the node stopped: its caller must not
        hang, and a publish is counted as lost."""
        fn = item[0]
        if fn == self._run_event or fn == self._run_remote_event:
            self._stats["undeliverable"] += 1
        elif fn == self._run_rpc:
            future = item[4]
            if not future.done():
                future.set_exception(NodeStoppedError("the node stopped before the handler started"))
        elif fn == self._run_remote_rpc:
            self._link.reply(item[1], item[2], wire.NOT_RUN, "the owner node stopped before the handler started")
        elif fn == self._run_handover:
            self._link.reply(item[1], item[2], wire.RETRY, f"node {self._name} stopped before taking the agent")

    async def stop_when_idle(self) -> None:
        """Stop once nothing is queued or running on this node and everything it sent was
        acknowledged by its peers."""
        if self._start_task is not None and not self._start_task.done():
            await self._start_task
        while self._running:
            await self._dispatcher.join()
            if self._link.unacknowledged() == 0:
                break
            assert self._view_event is not None
            # Credits and replies arrive as control traffic; wait a little and check again.
            await asyncio.sleep(0.005)
        await self.stop()

    async def stop_when(self, condition: Callable[[], bool], check_period: float = 0.1) -> None:
        """Stop once ``condition()`` is true (checked every ``check_period`` seconds)."""
        while not condition():  # noqa: ASYNC110 - the condition is a plain callable: polling is the contract
            await asyncio.sleep(check_period)
        await self.stop()

    async def stop_when_signal(self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Stop when one of ``signals`` arrives (SIGTERM and SIGINT by default)."""
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        for sig in signals:
            loop.add_signal_handler(sig, received.set)
        try:
            await received.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
        await self.stop()

    async def close(self) -> None:
        """Stop if running, then close every agent on this node."""
        await self.stop()
        for agent_id, agent in list(self._agents.instances.items()):
            try:
                await agent.close()
            except Exception:
                logger.exception("agent %s raised in close()", agent_id)
            if agent_id not in self._agents.registered:
                self._agents.drop(agent_id)

    async def __aenter__(self) -> MeshNode:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _raise_background_exception(self) -> None:
        if self._background_exception is not None:
            exc, self._background_exception = self._background_exception, None
            raise exc

    def _declared_dead(self) -> None:
        """The mesh declared this node dead while it was alive (a long stall, a cut link)."""
        asyncio.get_running_loop().call_soon(self._rejoin, self._incarnation)

    def _rejoin(self, declared: int) -> None:
        if not self._running or self._leaving or declared != self._incarnation:
            return  # stopped meanwhile, or already rejoined after an earlier notice
        self._incarnation = max(self._incarnation + 1, time.time_ns() // 1_000_000)
        self._stats["rejoined"] += 1
        logger.warning(
            "node %s was declared dead by its peers; rejoining as incarnation %d", self._name, self._incarnation
        )
        self._link.rejoin(self._incarnation)
        self._open_settling(self._agents.factories)  # the others may have made copies meanwhile
        self._view_changed()

    # -- registration -----------------------------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Register a factory for an agent type on this node and make it known mesh-wide.

        The same type may be registered on several nodes (with the same class): its keys are
        then spread over them by placement.
        """
        if isinstance(type, AgentType):
            type_name = type.type
        elif isinstance(type, str):
            type_name = type
        else:
            type_name = str(getattr(type, "type", type))
        if not is_valid_agent_type(type_name):
            raise ValueError(rf"Invalid agent type: {type_name}. Allowed values MUST match the regex: `^[\w\-\.]+\Z`")
        fingerprint = f"{expected_class.__module__}.{expected_class.__qualname__}" if expected_class else "*"
        self._check_conflict(type_name, "factory", fingerprint)
        self._agents.add_factory(type_name, agent_factory, expected_class)
        if expected_class is not None:
            self._learn_agent_class(expected_class)
        if self._running:
            self._open_settling([type_name])
        await self._registrations_changed()
        if is_autogen_object(type) or (expected_class is not None and self._agents.is_foreign_class(expected_class)):
            self._autogen_flavoured = True
        if is_autogen_object(type):
            return type  # type: ignore[return-value]  # the caller's flavour (autogen_core's BaseAgent.register)
        return AgentType(type_name)

    def _check_conflict(self, agent_type: str, kind: str, fingerprint: str) -> None:
        for node_id, info in self._table.nodes.items():
            other = info.types.get(agent_type)
            if node_id == self._node_id or other is None:
                continue
            if other.kind != kind:
                raise AgentTypeConflictError(
                    f"agent type {agent_type!r} is registered with {other.kind} on node {node_id}; it cannot be "
                    f"registered with {kind} here"
                )
            if "*" not in (fingerprint, other.fingerprint) and other.fingerprint != fingerprint:
                raise AgentTypeConflictError(
                    f"agent type {agent_type!r} is registered with class {other.fingerprint} on node {node_id}; "
                    f"registering class {fingerprint} under the same type would split its agents between two "
                    "classes: use another type name"
                )

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register one agent object under ``agent_id``; messages to it are routed to this node."""
        given = agent_id
        agent_id = coerce_agent_id(agent_id)
        self._agents.check_instance(agent_instance, agent_id)
        cls = type(agent_instance)
        self._check_conflict(agent_id.type, "instance", f"{cls.__module__}.{cls.__qualname__}")
        for node_id, info in self._table.nodes.items():
            held = info.types.get(agent_id.type)
            if node_id != self._node_id and held is not None and agent_id.key in held.keys:
                raise AgentTypeConflictError(f"agent {agent_id} is already registered as an instance on node {node_id}")
        if self._agents.is_foreign_class(cls):
            from . import autogen as _autogen

            self._autogen_flavoured = True
            await agent_instance.bind_id_and_runtime(id=_autogen.to_autogen_id(agent_id), runtime=self)  # type: ignore[arg-type]
        else:
            await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        self._agents.add_instance(agent_instance, agent_id)
        self._learn_agent_class(cls)
        await self._registrations_changed()
        return given  # in the caller's flavour (an autogen_core AgentId stays one)

    def _learn_agent_class(self, cls: type[Any]) -> None:
        handles = getattr(cls, "_handles_types", None)
        if callable(handles):
            try:
                for message_type, serializers in handles():
                    self._serializers.add_serializer(serializers)
                    self._serializers.learn_type(message_type)
            except ValueError:
                pass  # AutoGen raises for types it cannot serialize; they still work on this node
        for handler in getattr(cls, "_discover_handlers", list)():
            for t in getattr(handler, "target_types", ()):
                self._serializers.learn_type(t)
            for t in getattr(handler, "produces_types", ()):
                self._serializers.learn_type(t)

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription held by this node; Type and TypePrefix ones are shared mesh-wide.

        Returns once every alive peer acknowledged it (bounded; gossip repairs stragglers), so a
        publish made afterwards from any node sees it.
        """
        subscription = coerce_subscription(subscription)
        if any(existing == subscription for existing in self._subscriptions) or any(
            existing == subscription for existing in self._custom_subscriptions
        ):
            raise ValueError("Subscription already exists")
        if _sub_info(subscription) is None:
            if not self._warned_custom:
                self._warned_custom = True
                logger.warning(
                    "%s is not a TypeSubscription or TypePrefixSubscription: it cannot be shared with other "
                    "nodes and only applies to publishes made on this node",
                    type(subscription).__name__,
                )
            self._custom_subscriptions.append(subscription)
            return
        self._subscriptions.append(subscription)
        await self._registrations_changed()

    async def remove_subscription(self, id: str) -> None:
        """Remove this node's holding of the subscription with id ``id``."""
        for subs in (self._subscriptions, self._custom_subscriptions):
            for i, sub in enumerate(subs):
                if sub.id == id:
                    del subs[i]
                    if subs is self._subscriptions:
                        await self._registrations_changed()
                    return
        raise ValueError("Subscription does not exist")

    def add_message_serializer(self, serializer: MessageSerializer[Any] | Sequence[MessageSerializer[Any]]) -> None:
        """Teach this node to encode and decode a message type."""
        self._serializers.add_serializer(serializer)

    def _local_info(self) -> NodeInfo:
        types: dict[str, TypeInfo] = {}
        for name, entry in self._agents.factories.items():
            types[name] = TypeInfo("factory", entry.fingerprint)
        for name in self._agents.instance_types:
            keys = frozenset(a.key for a in self._agents.registered if a.type == name)
            types[name] = TypeInfo("instance", self._agents.fingerprint(name), keys)
        subs = tuple(info for info in map(_sub_info, self._subscriptions) if info is not None)
        return NodeInfo(
            types=types,
            subscriptions=subs,
            capabilities=frozenset(self._capabilities),
            window=(self._config.window_messages, self._config.window_bytes),
        )

    async def _registrations_changed(self) -> None:
        self._info = self._local_info()
        self._view_changed()
        membership = self._link.membership
        if self._running and membership is not None:
            stragglers = await membership.set_metadata(self._info.encode(), self._config.visibility_timeout_s)
            if stragglers:
                logger.info("registration not yet acknowledged by %d peer(s); gossip will repair", len(stragglers))

    @property
    def _table(self) -> RoutingTable:
        """The routing table, rebuilt on first use after a change: a join storm that brings dozens
        of membership events in one go costs one rebuild, not one per event."""
        if self._table_stale:
            infos = self._link.infos() if self._running else {}
            if not self._leaving:
                infos[self._node_id] = self._info
            for node_id in self._refusing:
                infos.pop(node_id, None)
            self._table_now = RoutingTable(infos)
            self._table_stale = False
            if self._running and not self._leaving and self._agents.instances:
                # Before anything is routed by the new table: agents that move are held from now on.
                self._check_ownership()
        return self._table_now

    def _view_changed(self) -> None:
        """This node's registrations or its peers changed: the table is rebuilt when next used, and
        ownership moves and view listeners run once the current burst of changes is over."""
        self._table_stale = True
        self._view += 1
        if self._view_event is not None:
            self._view_event.set()
            self._view_event = asyncio.Event()
        if not self._view_scheduled:
            self._view_scheduled = True
            asyncio.get_running_loop().call_soon(self._after_view_change)

    def _after_view_change(self) -> None:
        self._view_scheduled = False
        if self._moved_out:
            self._forget_gone_takers()
        if self._running and not self._leaving:
            self._check_ownership()
            self._say_settled()
        if self._settle_until:
            self._release_unsettled()  # a node waited for may be gone
        for listener in list(self._view_listeners):
            try:
                listener()
            except Exception:
                logger.exception("view listener failed")

    async def _view_moved(self, timeout: float) -> None:
        event = self._view_event
        if event is None:
            return
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    # -- messaging: publish -----------------------------------------------------------------------

    def _new_message_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> None:
        """Deliver ``message`` to every agent whose subscription matches ``topic_id`` (the sender
        itself excepted), on whichever node owns each recipient. Returns once it is queued here or
        handed to the peers' channels (a sender waits while a peer's flow-control window is full).

        Raises:
            SerializationError: the message must cross nodes and cannot be encoded.
            MessageTooLargeError: its encoding exceeds ``config.max_message_size``.
        """
        if type(topic_id) is not TopicId:
            topic_id = coerce_topic_id(topic_id)
        if sender is not None and type(sender) is not AgentId:
            sender = coerce_agent_id(sender)
        cancellable = cancellation_token is not None
        if cancellation_token is None:
            cancellation_token = CancellationToken()
        if message_id is None:
            message_id = self._new_message_id()
        if self._interventions:
            ctx = MessageContext(sender, topic_id, False, cancellation_token, message_id)
            for handler in self._interventions:
                try:
                    changed = await handler.on_publish(message, message_context=ctx)
                    _warn_if_none(changed, "on_publish")
                except Exception:
                    logger.error("Exception raised in intervention handler on_publish", exc_info=True)
                    return
                if _is_drop(changed):
                    self._stats["dropped_by_intervention"] += 1
                    return
                if changed is not None:
                    message = changed
        self._stats["published"] += 1
        table = self._table
        recipients = table.recipients(topic_id.type, topic_id.source)
        if self._custom_subscriptions:
            recipients = recipients + [
                coerce_agent_id(s.map_to_agent(topic_id)) for s in self._custom_subscriptions if s.is_match(topic_id)
            ]
        if not recipients:
            return
        me = self._node_id
        local: list[AgentId] = []
        remote: dict[str, list[AgentId]] | None = None
        for agent_id in recipients:
            if agent_id == sender:
                continue
            owner = table.owner(agent_id._type, agent_id._key)
            if owner == me or (self._moving and agent_id in self._moving):
                # Ours, or moving from here: then it waits here and follows the agent.
                local.append(agent_id)
            elif owner is None:
                self._stats["undeliverable"] += 1
                logger.warning("publish to %s: no live node hosts agent type %r", topic_id, agent_id.type)
            else:
                if remote is None:
                    remote = {}
                remote.setdefault(owner, []).append(agent_id)
        body = self._encode(message) if remote else None
        submit = self._dispatcher.submit
        run = self._run_event
        for agent_id in local:
            submit((run, agent_id, message, MessageContext(sender, topic_id, False, cancellation_token, message_id)))
        if remote:
            assert body is not None
            if cancellable:
                self._carry_cancel(cancellation_token, message_id, list(remote))
            await self._send_publish(remote, body, topic_id, sender, message_id, 0, cancellable)
        elif _HANDLER_VAR.get(None) is None and self._dispatcher.running:
            await self._dispatcher.wait_for_room()

    def _encode(self, message: Any) -> tuple[str, str, bytes]:
        body = self._serializers.encode(message)
        if len(body[2]) > self._config.max_message_size:
            raise MessageTooLargeError(
                f"{type(message).__name__} encodes to {len(body[2])} bytes, over max_message_size "
                f"({self._config.max_message_size} bytes; raise MeshConfig.max_message_size on every node)"
            )
        return body

    def _carry_cancel(self, token: CancellationToken, message_id: str, owners: list[str]) -> None:
        """Cancelling the publisher's token cancels the token its remote recipients see."""

        def cancel() -> None:
            for owner in owners:
                self._link.send_control(owner, [wire.CANCEL_PUBLISH, message_id, self._node_id])

        token.add_callback(cancel)

    async def _send_publish(
        self,
        groups: dict[str, list[AgentId]],
        body: tuple[str, str, bytes],
        topic_id: TopicId,
        sender: AgentId | None,
        message_id: str,
        hops: int,
        cancellable: bool = False,
    ) -> None:
        type_name, content_type, payload = body
        size = len(payload) + 128
        sender_wire = wire.agent_id_to_wire(sender)
        for owner, agent_ids in groups.items():
            record = [
                wire.PUBLISH,
                message_id,
                topic_id.type,
                topic_id.source,
                sender_wire,
                [[a._type, a._key] for a in agent_ids],
                type_name,
                content_type,
                payload,
                self._view,
                hops,
                cancellable,
            ]
            sent = self._link.try_send_data(owner, record, size)
            if sent:
                continue
            try:
                await self._link.send_data(owner, record, size)
            except AgentUnreachableError as exc:
                self._stats["undeliverable"] += len(agent_ids)
                logger.warning("publish to %s: %s", topic_id, exc)

    async def _run_event(self, agent_id: AgentId, message: Any, ctx: MessageContext, hops: int = 0) -> None:
        agent = self._agents.instances.get(agent_id)
        if (agent is None or self._moving or self._unsettled) and self._divert(
            (self._run_event, agent_id, message, ctx, hops), agent_id, agent is None, hops
        ):
            return
        reset = _HANDLER_VAR.set(agent_id)
        try:
            if agent is None:
                agent = await self._agents.get(agent_id)
            if agent_id in self._agents.foreign:
                from . import autogen as _autogen

                await _autogen.deliver(agent, message, ctx)
            else:
                await agent.on_message(message, ctx)
            self._stats["delivered"] += 1
        except BaseException as exc:
            self._stats["handler_errors"] += 1
            logger.error("Error processing publish message for %s", agent_id, exc_info=True)
            if not self._ignore_unhandled and self._background_exception is None:
                self._background_exception = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            _HANDLER_VAR.reset(reset)

    # -- messaging: send --------------------------------------------------------------------------

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send ``message`` to ``recipient`` on whichever node owns it and return the reply.

        Raises:
            NodeStoppedError: this node is not running.
            UnknownAgentTypeError: no live node hosts the recipient's type (at once).
            AgentUnreachableError: the owner died or the link was lost before the reply.
            TimeoutError: ``timeout`` (or the node's ``rpc_timeout_s``) passed; the handler's
                cancellation token is cancelled too, on whichever node it runs.
            Exception: whatever the handler raised (rebuilt by type across nodes where allowed,
                else :class:`RemoteAgentError`).
        """
        if type(recipient) is not AgentId:
            recipient = coerce_agent_id(recipient)
        if sender is not None and type(sender) is not AgentId:
            sender = coerce_agent_id(sender)
        if cancellation_token is None:
            cancellation_token = CancellationToken()
        if message_id is None:
            message_id = self._new_message_id()
        if not self._running:
            # First: a stopped node knows none of its peers' types, and that is not the caller's error.
            raise NodeStoppedError("the node is not running: call `await node.start()` first")
        if self._table.owner(recipient._type, recipient._key) is None:
            raise compat(UnknownAgentTypeError)(
                f"Agent type {recipient.type!r} is not registered on any live node (recipient {recipient})"
            )
        if cancellation_token.is_cancelled():
            raise asyncio.CancelledError("the cancellation token was cancelled before the message was sent")
        if self._interventions:
            ctx = MessageContext(sender, None, True, cancellation_token, message_id)
            for handler in self._interventions:
                changed = await handler.on_send(message, message_context=ctx, recipient=recipient)
                _warn_if_none(changed, "on_send")
                if _is_drop(changed):
                    self._stats["dropped_by_intervention"] += 1
                    raise compat(MessageDroppedException)()
                if changed is not None:
                    message = changed
        self._stats["sent"] += 1
        limit = timeout if timeout is not None else self._rpc_timeout_s
        if limit is None:
            result = await self._call(message, recipient, sender, cancellation_token, message_id)
        else:
            bound = asyncio.timeout(limit)
            try:
                async with bound:
                    result = await self._call(message, recipient, sender, cancellation_token, message_id)
            except TimeoutError:
                if not bound.expired():
                    raise  # not this bound: e.g. SendTimeoutError, or the handler's own TimeoutError
                raise TimeoutError(f"no reply from {recipient} within {limit} s") from None
        if self._interventions:
            for handler in self._interventions:
                changed = await handler.on_response(result, sender=recipient, recipient=sender)
                _warn_if_none(changed, "on_response")
                if _is_drop(changed):
                    self._stats["dropped_by_intervention"] += 1
                    raise compat(MessageDroppedException)()
                if changed is not None:
                    result = changed
        return result

    async def _call(
        self, message: Any, recipient: AgentId, sender: AgentId | None, token: CancellationToken, message_id: str
    ) -> Any:
        body: tuple[str, str, bytes] | None = None
        for _attempt in range(RPC_RETRIES + 1):
            owner = self._table.owner(recipient._type, recipient._key)
            if owner is None:
                raise compat(UnknownAgentTypeError)(f"Agent type {recipient.type!r} is not registered on any live node")
            if owner == self._node_id or (self._moving and recipient in self._moving):
                local = await self._call_local(message, recipient, sender, token, message_id)
                if type(local) is not _MovedTo:
                    return local
                owner = local.taker  # the agent moved while the call waited: follow it
                if self._link.peer(owner) is None:  # the taker is gone already: route afresh
                    self._link.stats["retried"] += 1
                    await self._view_moved(self._config.membership.probe_interval_s)
                    continue
            if body is None:
                body = self._encode(message)
            result = await self._call_remote(owner, body, recipient, sender, token, message_id)
            if result is not _RETRY:
                return result
            self._link.stats["retried"] += 1
            await self._view_moved(self._config.membership.probe_interval_s)
        raise RetryableRoutingError(f"the owner of {recipient} kept moving while the call was retried")

    async def _call_local(
        self, message: Any, recipient: AgentId, sender: AgentId | None, token: CancellationToken, message_id: str
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ctx = MessageContext(sender, None, True, token, message_id)
        self._dispatcher.submit((self._run_rpc, recipient, message, ctx, future))

        def cancel() -> None:
            future.cancel()

        token.add_callback(cancel)
        try:
            return await future
        except asyncio.CancelledError:
            # Our await was cancelled (timeout, or the caller's task): the handler sees the token.
            token.cancel()
            raise
        finally:
            _forget_callback(token, cancel)

    async def _call_remote(
        self,
        owner: str,
        body: tuple[str, str, bytes],
        recipient: AgentId,
        sender: AgentId | None,
        token: CancellationToken,
        message_id: str,
    ) -> Any:
        type_name, content_type, payload = body
        started = time.perf_counter()
        req_id, future = self._link.new_call(owner, recipient)
        record = [
            wire.RPC,
            req_id,
            self._node_id,
            message_id,
            [recipient._type, recipient._key],
            wire.agent_id_to_wire(sender),
            type_name,
            content_type,
            payload,
            self._view,
            0,
        ]

        def cancel() -> None:
            self._link.cancel_call(req_id)
            future.cancel()

        token.add_callback(cancel)
        try:
            if not self._link.try_send_data(owner, record, len(payload) + 128):
                await self._link.send_data(owner, record, len(payload) + 128)
            self._link.flush_if_alone()
            result = await future
            self._latencies[self._latency_count % LATENCY_SAMPLES] = time.perf_counter() - started
            self._latency_count += 1
            return result
        except asyncio.CancelledError:
            self._link.cancel_call(req_id)
            raise
        except BaseException:
            self._link.forget_call(req_id)
            if future.done() and not future.cancelled():
                future.exception()  # failed too (the peer died while this call waited for credit): read
            raise
        finally:
            _forget_callback(token, cancel)

    def _complete_call(self, future: asyncio.Future[Any], status: Any, a: Any, b: Any, c: Any) -> None:
        """A reply arrived for one of our calls: whatever a peer sent, the call ends here."""
        try:
            if type(status) is not int:
                raise FrameDecodeError("reply status must be an integer")
            if status == wire.OK:
                body = wire.body_from_wire(a, b, c)
                future.set_result(self._serializers.decode(body.type_name, body.content_type, body.payload))
            elif status == wire.ERROR:
                future.set_exception(wire.error_from_wire(a, b, c, self._allowed_errors))
            elif status == wire.RETRY:
                future.set_result(_RETRY)
            elif status == wire.UNKNOWN_TYPE:
                future.set_exception(compat(UnknownAgentTypeError)(wire.reason(a)))
            elif status == wire.NOT_RUN:
                future.set_exception(compat(AgentUnreachableError)(wire.reason(a)))
            else:
                raise FrameDecodeError(f"unknown reply status {status}")
        except Exception as exc:  # a malformed reply still ends the call, with the reason
            if not future.done():
                error = (
                    exc
                    if isinstance(exc, FrameDecodeError | ValueError)
                    else FrameDecodeError(f"malformed reply ({type(exc).__name__})")
                )
                future.set_exception(error)

    async def _run_rpc(self, agent_id: AgentId, message: Any, ctx: MessageContext, future: asyncio.Future[Any]) -> None:
        if future.done() or ctx.cancellation_token.is_cancelled():
            return  # cancelled before it started: the handler never runs
        agent = self._agents.instances.get(agent_id)
        if (agent is None or self._moving or self._unsettled) and self._divert(
            (self._run_rpc, agent_id, message, ctx, future), agent_id, agent is None, 0
        ):
            return
        reset = _HANDLER_VAR.set(agent_id)
        try:
            if agent is None:
                agent = await self._agents.get(agent_id)
            if agent_id in self._agents.foreign:
                from . import autogen as _autogen

                result = await _autogen.deliver(agent, message, ctx)
            else:
                result = await agent.on_message(message, ctx)
        except asyncio.CancelledError:
            if not future.done():
                if self._running and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    future.cancel()  # the handler itself raised CancelledError, as in AutoGen
                else:
                    future.set_exception(NodeStoppedError("the node stopped while the handler ran"))
            raise
        except BaseException as exc:
            self._stats["handler_errors"] += 1
            if not future.done():
                future.set_exception(exc)
        else:
            self._stats["delivered"] += 1
            if not future.done():
                future.set_result(result)
        finally:
            _HANDLER_VAR.reset(reset)

    # -- records from peers -----------------------------------------------------------------------

    def _accept_publish(self, peer: Peer, record: list[Any]) -> None:
        if len(record) < 11:
            raise FrameDecodeError("PUBLISH must have at least 11 fields")
        message_id = wire._str(record[1], "message id")
        topic_id = wire.topic_from_wire(record[2], record[3])
        sender = wire.optional_agent_id(record[4], "sender")
        raw_recipients = record[5]
        if not isinstance(raw_recipients, list) or len(raw_recipients) > wire.MAX_RECIPIENTS:
            raise FrameDecodeError("recipients must be a list")
        recipients = [wire.agent_id_from_wire(r, "recipient") for r in raw_recipients]
        body = wire.body_from_wire(record[6], record[7], record[8])
        hops = wire._int(record[10], "hops")
        table = self._table
        me = self._node_id
        instances = self._agents.instances
        cancellable = len(record) > 11 and record[11] is True
        token = self._link.publish_token(peer.node_id, message_id) if cancellable else CancellationToken()
        forward: dict[str, list[AgentId]] = {}
        for agent_id in recipients:
            owner = table.owner(agent_id._type, agent_id._key)
            if (
                owner == me
                or agent_id in instances
                or (self._moving and agent_id in self._moving)
                or (hops > 0 and self._agents.hosts(agent_id.type))
            ):
                # Ours; or it lives here or moves from here (it waits and follows the agent); or
                # the views disagreed twice and we host the type: deliver rather than lose.
                ctx = MessageContext(sender, topic_id, False, token, message_id)
                self._dispatcher.submit((self._run_remote_event, agent_id, body, ctx, hops))
            elif owner is not None and hops == 0:
                forward.setdefault(owner, []).append(agent_id)
            else:
                self._stats["undeliverable"] += 1
                logger.warning("publish from %s to %s: no live node hosts %s", peer.record.name, topic_id, agent_id)
        if forward:
            self._link.stats["forwarded"] += 1
            self._spawn(
                self._send_publish(
                    forward, (body.type_name, body.content_type, body.payload), topic_id, sender, message_id, hops + 1
                )
            )

    def _decode_now(self, body: Body) -> Any:
        """The body's message, decoded once; UnknownPayload when this node knows no such type."""
        if body.value is not wire._UNSET:
            return body.value
        try:
            value = self._serializers.decode(body.type_name, body.content_type, body.payload)
        except ValueError:
            self._stats["bad_payloads"] += 1
            raise
        if not isinstance(value, UnknownPayload):
            body.value = value
        return value

    async def _decode(self, agent_id: AgentId, body: Body) -> Any:
        value = self._decode_now(body)
        if isinstance(value, UnknownPayload) and self._agents.hosts(agent_id.type):
            # The agent's class may name the type: learn its handlers' types and try again.
            agent = await self._agents.get(agent_id)
            self._learn_agent_class(type(agent))
            value = self._decode_now(body)
        body.value = value
        return value

    async def _run_remote_event(self, agent_id: AgentId, body: Body, ctx: MessageContext, hops: int = 0) -> None:
        absent = agent_id not in self._agents.instances
        # Checked before decoding too: that may create the agent to learn its message types.
        if (absent or self._moving or self._unsettled) and self._divert(
            (self._run_remote_event, agent_id, body, ctx, hops), agent_id, absent, hops
        ):
            return
        try:
            message = body.value
            if message is wire._UNSET:
                message = self._decode_now(body)
                if isinstance(message, UnknownPayload):
                    message = await self._decode(agent_id, body)
        except Exception as exc:
            logger.error("publish to %s dropped: %s", agent_id, exc)
            return
        await self._run_event(agent_id, message, ctx, hops)

    def _accept_rpc(self, peer: Peer, record: list[Any]) -> None:
        if len(record) < 11:
            raise FrameDecodeError("RPC must have at least 11 fields")
        req_id = wire._int(record[1], "request id")
        origin = wire._str(record[2], "origin", 64)
        message_id = wire._str(record[3], "message id")
        recipient = wire.agent_id_from_wire(record[4], "recipient")
        sender = wire.optional_agent_id(record[5], "sender")
        body = wire.body_from_wire(record[6], record[7], record[8])
        hops = wire._int(record[10], "hops")
        owner = self._table.owner(recipient._type, recipient._key)
        if owner is None:
            self._link.reply(
                origin, req_id, wire.UNKNOWN_TYPE, f"agent type {recipient.type!r} is not registered on any live node"
            )
            return
        if (
            owner != self._node_id
            and recipient not in self._agents.instances
            and not (self._moving and recipient in self._moving)
        ):
            # Not ours, and not living or moving here (a taker whose view lags runs what it holds).
            if hops == 0 and self._link.peer(owner) is not None:
                self._forward_rpc_record(owner, record, origin, req_id, len(body.payload) + 128, 1)
            elif hops < MOVED_HOPS and self._moved_out and (taker := self._taker_of(recipient)) is not None:
                # It moved from here, and the sender's view still routes it here: follow it.
                self._forward_rpc_record(taker, record, origin, req_id, len(body.payload) + 128, hops + 1)
            else:
                self._link.reply(origin, req_id, wire.RETRY, f"node {self._name} does not own {recipient}")
            return
        token = CancellationToken()
        self._link.register_inbound(origin, req_id, token)
        if hops > 0 and origin != self._node_id:
            self._link.took_forwarded(origin, req_id, recipient)
        ctx = MessageContext(sender, None, True, token, message_id)
        self._dispatcher.submit((self._run_remote_rpc, origin, req_id, recipient, body, ctx, hops))

    def _forward_rpc_record(
        self, owner: str, record: list[Any], origin: str, req_id: int, size: int, hops: int
    ) -> None:
        forwarded = list(record)
        forwarded[10] = hops
        self._link.remember_forward(origin, req_id, owner)
        self._link.stats["forwarded"] += 1
        if not self._link.try_send_data(owner, forwarded, size):
            self._spawn(self._forward_rpc(owner, forwarded, origin, req_id, size))

    async def _forward_rpc(self, owner: str, record: list[Any], origin: str, req_id: int, size: int) -> None:
        try:
            await self._link.send_data(owner, record, size)
        except (AgentUnreachableError, SendTimeoutError) as exc:  # not sent: the caller may route it again
            self._link.reply(origin, req_id, wire.RETRY, str(exc))

    async def _run_remote_rpc(
        self, origin: str, req_id: int, agent_id: AgentId, body: Body, ctx: MessageContext, hops: int = 0
    ) -> None:
        link = self._link
        if ctx.cancellation_token.is_cancelled():
            link.finish_inbound(origin, req_id)
            link.reply(origin, req_id, wire.NOT_RUN, "cancelled before the handler started")
            return
        absent = agent_id not in self._agents.instances
        if (absent or self._moving or self._unsettled) and self._divert(
            (self._run_remote_rpc, origin, req_id, agent_id, body, ctx, hops), agent_id, absent, hops
        ):
            return
        reset = _HANDLER_VAR.set(agent_id)
        try:
            message = await self._decode(agent_id, body)
            agent = self._agents.instances.get(agent_id)
            if agent is None:
                agent = await self._agents.get(agent_id)
            if agent_id in self._agents.foreign:
                from . import autogen as _autogen

                result = await _autogen.deliver(agent, message, ctx)
            else:
                result = await agent.on_message(message, ctx)
            reply_body = self._encode(result)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                link.reply(origin, req_id, wire.NOT_RUN, "the owner node stopped while the handler ran")
                raise
            link.reply(origin, req_id, wire.ERROR, *wire.error_to_wire(exc))
        except BaseException as exc:
            self._stats["handler_errors"] += 1
            link.reply(origin, req_id, wire.ERROR, *wire.error_to_wire(exc))
        else:
            self._stats["delivered"] += 1
            link.reply(origin, req_id, wire.OK, *reply_body)
        finally:
            _HANDLER_VAR.reset(reset)
            link.finish_inbound(origin, req_id)

    def _accept_control(self, peer: Peer, record: list[Any]) -> None:
        kind = record[0]
        if kind == wire.AGENT_OP:
            if len(record) != 7:
                raise FrameDecodeError("AGENT_OP must have 7 fields")
            req_id = wire._int(record[1], "request id")
            origin = wire._str(record[2], "origin", 64)
            op = wire._str(record[3], "operation", 16)
            agent_id = wire.agent_id_from_wire([record[4], record[5]], "agent")
            self._dispatcher.submit((self._run_agent_op, origin, req_id, op, agent_id, record[6]))
        elif kind == wire.HANDOVER:
            if len(record) != 5:
                raise FrameDecodeError("HANDOVER must have 5 fields")
            req_id = wire._int(record[1], "request id")
            agent_id = wire.agent_id_from_wire([record[2], record[3]], "agent")
            state = wire._bytes(record[4], "state")
            self._dispatcher.submit((self._run_handover, peer.node_id, req_id, agent_id, state))
        elif kind == wire.SETTLED:
            if len(record) != 3:
                raise FrameDecodeError("SETTLED must have 3 fields")
            incarnation = wire._int(record[1], "incarnation")
            if not isinstance(record[2], list) or len(record[2]) > MAX_SETTLED_TYPES:
                raise FrameDecodeError(f"SETTLED must name at most {MAX_SETTLED_TYPES} agent types in a list")
            agent_types = [wire._str(t, "agent type", 255) for t in record[2]]
            self._accept_settled(peer, incarnation, agent_types)
        elif kind == wire.STATS:
            if len(record) != 3:
                raise FrameDecodeError("STATS must have 3 fields")
            req_id = wire._int(record[1], "request id")
            payload = msgpack.packb(self.statistics(), use_bin_type=True)
            self._link.reply(peer.node_id, req_id, wire.OK, "dict", "application/x-msgpack", payload)

    async def _run_agent_op(self, origin: str, req_id: int, op: str, agent_id: AgentId, argument: Any) -> None:
        try:
            result = await self._agent_op_local(op, agent_id, argument)
            payload = msgpack.packb(result, use_bin_type=True)
        except BaseException as exc:
            self._link.reply(origin, req_id, wire.ERROR, *wire.error_to_wire(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._link.reply(origin, req_id, wire.OK, type(result).__name__, "application/x-msgpack", payload)

    async def _agent_op_local(self, op: str, agent_id: AgentId, argument: Any) -> Any:
        if self._table.owner(agent_id.type, agent_id.key) != self._node_id:
            raise compat(NotAccessibleError)(f"node {self._name} does not own {agent_id}")
        while (
            self._settle_until
            and agent_id not in self._agents.instances
            and (agent_id in self._unsettled or self._unsettled_type(agent_id.type))
        ):  # bounded: the type's window ends
            await self._settle_event.wait()  # another node may still hand it over: not afresh
        agent = await self._agents.get(agent_id)
        if op == "metadata":
            return dict(agent.metadata)
        if op == "save":
            return dict(await agent.save_state())
        if op == "load":
            await agent.load_state(msgpack.unpackb(argument, raw=False))
            return None
        if op == "get":
            return None
        raise ValueError(f"unknown agent operation {op!r}")

    async def peer_statistics(self, node_id: str, timeout: float = 2.0) -> dict[str, Any]:
        """The :meth:`statistics` of a peer, asked over the mesh.

        Raises:
            AgentUnreachableError: ``node_id`` is not a live peer.
            TimeoutError: no answer within ``timeout`` seconds.
        """
        if node_id == self._node_id:
            return self.statistics()
        req_id, future = self._link.new_call(node_id, None)
        self._link.send_control(node_id, [wire.STATS, req_id, self._node_id])
        try:
            async with asyncio.timeout(timeout):
                stats: dict[str, Any] = await future
        finally:
            self._link.forget_call(req_id)
        return stats

    async def _agent_op(self, op: str, agent_id: AgentId, argument: Any = None) -> Any:
        """Run ``op`` on the agent's owner, here or remotely."""
        owner = self._table.owner(agent_id.type, agent_id.key)
        if owner is None:
            raise compat(UnknownAgentTypeError)(f"Agent type {agent_id.type!r} is not registered on any live node")
        if owner == self._node_id:
            return await self._agent_op_local(op, agent_id, argument)
        req_id, future = self._link.new_call(owner, agent_id)
        self._link.send_control(
            owner, [wire.AGENT_OP, req_id, self._node_id, op, agent_id.type, agent_id.key, argument]
        )
        try:
            async with asyncio.timeout(self._rpc_timeout_s):
                return await future
        finally:
            self._link.forget_call(req_id)

    # -- ownership moves --------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    def _check_ownership(self) -> None:
        """Hand over live agents whose keys moved to another node (a join, a healed partition)."""
        table = self._table
        for agent_id in self._agents.movable():
            owner = table.owner(agent_id.type, agent_id.key)
            if owner is not None and owner != self._node_id and agent_id not in self._moving:
                self._moving[agent_id] = []
                task = self._spawn(self._hand_over(agent_id, owner))
                self._handovers.add(task)
                task.add_done_callback(self._handovers.discard)

    async def _hand_over_all(self, deadline: float) -> None:
        """Hand every live agent to its next owner before this node leaves (by ``deadline``, a
        loop time), including agents that other nodes handed to this one meanwhile."""
        loop = asyncio.get_running_loop()
        if self._handovers:
            # Handovers begun before the stop (a node joined): let them settle first, so that the
            # messages they hold follow their agents instead of meeting a stopped node.
            await asyncio.wait(list(self._handovers), timeout=max(0.0, deadline - loop.time()))
        offered: set[AgentId] = set()
        kept: list[AgentId] = []
        while True:  # bounded: every agent is offered once, and waiting ends at the deadline
            table = self._table
            moves: list[Awaitable[bool]] = []
            moving: list[AgentId] = []
            for agent_id in self._agents.movable():
                if agent_id in offered or agent_id in self._moving:
                    continue
                # Offered once: a copy that reappears later was made afresh by a late message,
                # and must not overwrite the state its new owner has now.
                offered.add(agent_id)
                owner = table.owner(agent_id.type, agent_id.key)
                if owner is None:
                    continue  # no other node hosts its type: it stays here, as on a lone node
                self._moving[agent_id] = []
                moving.append(agent_id)
                moves.append(self._hand_over(agent_id, owner, deadline))
            if moves:
                for agent_id, moved in zip(moving, await asyncio.gather(*moves), strict=True):
                    if not moved:
                        kept.append(agent_id)
                continue
            remaining = deadline - loop.time()
            if self._receiving == 0 or remaining <= 0:
                break
            # A handover that arrived before this node began to leave is still loading: wait for it.
            self._received.clear()
            try:
                await asyncio.wait_for(self._received.wait(), remaining)
            except TimeoutError:
                break
        if kept:
            shown = ", ".join(map(str, kept[:10])) + (f" and {len(kept) - 10} more" if len(kept) > 10 else "")
            logger.warning(
                "stop: no node that stays in the mesh took over %d agent(s) within %.1f s (%s): they stay on "
                "this stopped node, and their state is lost if it is closed or the process ends",
                len(kept),
                self._config.stop_timeout_s,
                shown,
            )

    async def _hand_over(self, agent_id: AgentId, owner: str, deadline: float | None = None) -> bool:
        """save_state here, load_state on the new owner, then close this copy. A node that refuses
        (it is leaving too) or is gone is skipped for the next one in the key's HRW ranking.
        Messages for the agent that arrive meanwhile wait, and follow it to the node that took it
        once the move is settled (they run here only if it stayed here).

        Returns False if the agent stays here: nobody took it, or ``deadline`` (loop time) passed.
        """
        agent = self._agents.instances.get(agent_id)
        taker: str | None = None
        try:
            if agent is None:
                return True
            state = b""
            if _overrides(agent, "save_state"):
                try:
                    state = msgpack.packb(dict(await agent.save_state()), use_bin_type=True)
                except Exception:
                    logger.exception("save_state of %s failed: it moves to its new owner without state", agent_id)
            self._agents.drop(agent_id)
            skip: set[str] = set()
            target: str | None = owner
            # Bounded: every attempt skips one more node. Where the next choice is this node (it
            # does not leave, and the nodes ranked above it refused), the agent stays here.
            while target is not None and target != self._node_id:
                outcome = await self._offer(agent_id, target, state, deadline)
                if outcome is None:
                    taker = target
                    self._remember_moved(agent_id, target)
                    self._stats["handed_over"] += 1
                    try:
                        await agent.close()
                    except Exception:
                        logger.exception("agent %s raised in close()", agent_id)
                    return True
                if outcome == "deadline":
                    break
                logger.info("handover of %s: %s; trying the next node", agent_id, outcome)
                skip.add(target)
                if self._leaving and outcome.startswith("refused"):
                    self._refusing.add(target)
                    self._table_stale = True
                target = self._table.owner_skipping(agent_id.type, agent_id.key, skip)
            if not self._agents.put_back(agent_id, agent):
                logger.warning("handover of %s failed and a new copy exists here: the old state is dropped", agent_id)
                try:
                    await agent.close()
                except Exception:
                    logger.exception("agent %s raised in close()", agent_id)
                return True
            if target is None and not self._leaving:
                logger.warning("handover of %s: no node took it over; it stays here", agent_id)
            return False
        except asyncio.CancelledError:
            # The node stops mid-offer: the agent stays here with its state (the taker may have
            # loaded a copy too; it is not told to drop it).
            if agent is not None and taker is None and agent_id not in self._agents.instances:
                self._agents.put_back(agent_id, agent)
            raise
        finally:
            self._release_moving(agent_id, taker)

    async def _offer(self, agent_id: AgentId, target: str, state: bytes, deadline: float | None) -> str | None:
        """Offer the agent's state to ``target``: None once it took it (or did not answer in time,
        so that it may have), else why not: "refused: ...", "failed: ..." or "deadline"."""
        timeout = self._config.visibility_timeout_s
        if deadline is not None:
            timeout = min(timeout, deadline - asyncio.get_running_loop().time())
            if timeout <= 0:
                return "deadline"
        try:
            req_id, future = self._link.new_call(target, agent_id)
        except AgentUnreachableError as exc:
            return f"refused: {exc}"
        try:
            if not self._link.send_control(target, [wire.HANDOVER, req_id, agent_id.type, agent_id.key, state]):
                return f"refused: node {target} is not a live member of the mesh"
            async with asyncio.timeout(timeout):
                result = await future
        except TimeoutError:
            logger.warning("handover of %s to %s not confirmed within %.1f s", agent_id, target, timeout)
            return None
        except AgentUnreachableError as exc:
            return f"refused: {exc}"
        except Exception as exc:
            logger.warning("handover of %s to %s failed: %r", agent_id, target, exc)
            return f"failed: {exc!r}"
        finally:
            self._link.forget_call(req_id)
        if result is _RETRY:
            return f"refused: node {target} is leaving"
        return None

    def _remember_moved(self, agent_id: AgentId, taker: str) -> None:
        peer = self._link.peer(taker)
        if peer is None:
            return  # gone already: messages for the agent start it afresh here
        self._moved_out[agent_id] = (taker, peer.record.incarnation)
        self._moved_out.move_to_end(agent_id)
        if len(self._moved_out) > MAX_MOVED_OUT:
            self._moved_out.popitem(last=False)

    def _taker_of(self, agent_id: AgentId) -> str | None:
        """The live node this one handed ``agent_id`` to, if any."""
        moved = self._moved_out.get(agent_id)
        if moved is None:
            return None
        taker, incarnation = moved
        peer = self._link.peer(taker)
        if peer is None or peer.record.incarnation != incarnation:
            del self._moved_out[agent_id]  # the taker is gone, and the agent's state with it
            return None
        return taker

    def _forget_gone_takers(self) -> None:
        for agent_id in list(self._moved_out):
            self._taker_of(agent_id)

    def _release_moving(self, agent_id: AgentId, taker: str | None) -> None:
        self._release(self._moving.pop(agent_id, []), taker)

    def _release(self, items: list[WorkItem], taker: str | None) -> None:
        """Messages that waited: to ``taker``, or (None) run here ahead of what was queued
        meanwhile (messages from the same senders among them), or fail if the node stopped."""
        if taker is not None:
            for item in items:
                self._pass_on(taker, item)
        elif self._dispatcher.running:
            self._dispatcher.submit_first(items)
        else:
            for item in items:
                self._fail_item(item)

    def _lives_elsewhere(self, agent_id: AgentId) -> str | None:
        """The live node that has ``agent_id``, not live here, now: the one this node handed it to,
        or its owner in this node's view if that changed since a message for it was routed here
        (e.g. a node joined); None if it belongs here."""
        taker = self._taker_of(agent_id) if self._moved_out else None
        if taker is not None or not self._running:
            return taker
        owner = self._table.owner(agent_id.type, agent_id.key)
        if owner is None or owner == self._node_id or self._link.peer(owner) is None:
            return None
        return owner

    def _divert(self, item: WorkItem, agent_id: AgentId, absent: bool, hops: int) -> bool:
        """A message (its work ``item``) for ``agent_id`` is about to run here: if the agent is
        moving, hold it until the move settles; if it is ``absent`` because it moved away or
        another node owns it now, pass it on there; if it is absent and may still live on a node
        that has not handed it over yet (see _settle_until), hold it until that node says it is
        done. False if it runs here now."""
        waiting = self._moving.get(agent_id)
        if waiting is not None:
            waiting.append(item)
            return True
        held = self._unsettled.get(agent_id)
        if held is None:
            if not absent:
                return False
            target = self._lives_elsewhere(agent_id) if hops < MOVED_HOPS else None
            if target is not None:
                self._pass_on(target, item)
                return True
            if not (self._settle_until and self._unsettled_type(agent_id.type)):
                return False
            held = self._unsettled[agent_id] = []
        held.append(item)  # behind the ones that wait already
        self._stats["held_for_handover"] += 1
        self._dispatcher.held += 1
        return True

    # -- settling: one instance per key when a node starts hosting a type ------------------------

    def _open_settling(self, agent_types: Iterable[str]) -> None:
        """This node starts hosting ``agent_types`` (it starts, registers them, or rejoins): other
        nodes may hold live agents of them that it now owns, and hand them over once they see it.
        Until they say so, messages for such agents that are not live here wait (bounded)."""
        until = asyncio.get_running_loop().time() + self._config.settle_timeout_s
        for agent_type in agent_types:
            self._settle_until[agent_type] = until
            self._settled_by[agent_type] = set()
        self._arm_settle_timer()

    def _arm_settle_timer(self) -> None:
        """Release what waits when the first open window ends (again if the loop ran it early)."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._settle_until:
            when = min(self._settle_until.values())
            self._settle_timer = asyncio.get_running_loop().call_at(when, self._release_unsettled)

    def _unsettled_type(self, agent_type: str) -> bool:
        """Whether a node hosting ``agent_type`` has not said SETTLED to this one yet, within the
        type's window."""
        until = self._settle_until.get(agent_type)
        if until is None:
            return False
        if asyncio.get_running_loop().time() >= until - SETTLE_CLOCK_SLACK_S:
            del self._settle_until[agent_type]
            self._settled_by.pop(agent_type, None)
            return False
        settled = self._settled_by.get(agent_type, set())
        for node_id in self._table.type_hosts.get(agent_type, ()):
            if node_id == self._node_id or node_id in settled:
                continue
            peer = self._link.peer(node_id)
            if peer is not None and peer.speaks_1_1:
                return True  # it may hold one of them still (older nodes never say SETTLED)
        return False

    def _release_unsettled(self) -> None:
        """Run (or pass on) the messages whose agents no longer wait for a handover, in order."""
        for agent_type in [t for t in list(self._settle_until) if not self._unsettled_type(t)]:
            self._settle_until.pop(agent_type, None)
        for agent_id in [a for a in self._unsettled if a.type not in self._settle_until]:
            self._release_held(self._unsettled.pop(agent_id))
        self._arm_settle_timer()
        self._settle_event.set()
        self._settle_event = asyncio.Event()

    def _end_settling(self) -> None:
        """Every window ends now (the node stops): what waited goes to its agent's owner, which
        is another node once this one leaves (else it runs here, or fails if it cannot)."""
        self._settle_until.clear()
        self._settled_by.clear()
        self._arm_settle_timer()
        self._settle_event.set()
        self._settle_event = asyncio.Event()
        for agent_id in list(self._unsettled):
            owner = self._table.owner(agent_id.type, agent_id.key) if self._leaving else None
            self._release_held(self._unsettled.pop(agent_id), None if owner == self._node_id else owner)

    def _release_held(self, held: list[WorkItem], owner: str | None = None) -> None:
        self._dispatcher.held -= len(held)
        self._release(held, owner)

    def _accept_settled(self, peer: Peer, incarnation: int, agent_types: list[str]) -> None:
        if incarnation != self._incarnation or not self._settle_until:
            return  # said to an earlier incarnation of this node, or nothing waits
        for agent_type in agent_types:
            settled = self._settled_by.get(agent_type)
            if settled is not None:
                settled.add(peer.node_id)
        self._release_unsettled()

    def _say_settled(self) -> None:
        """Tell every peer that hosts a factory type this node hosts too, once per incarnation of
        the peer and type, that this node has handed over what the peer owns of it (after the
        handovers _check_ownership began for this view)."""
        mine = self._agents.factories
        if not mine:
            return
        table = self._table
        for node_id, info in table.nodes.items():
            if node_id == self._node_id:
                continue
            shared = frozenset(t for t, ti in info.types.items() if ti.kind == "factory" and t in mine)
            peer = self._link.peer(node_id)
            if not shared or peer is None or not peer.speaks_1_1:
                continue
            incarnation = peer.record.incarnation
            said = self._settled_sent.get(node_id)
            if said is not None and said[0] == incarnation:
                shared -= said[1]
                if not shared:
                    continue
                self._settled_sent[node_id] = (incarnation, said[1] | shared)
            else:
                self._settled_sent[node_id] = (incarnation, shared)
            self._spawn(self._send_settled(node_id, incarnation, sorted(shared), list(self._handovers)))
        for node_id in [n for n in self._settled_sent if n not in table.nodes]:
            del self._settled_sent[node_id]

    async def _send_settled(
        self, node_id: str, incarnation: int, agent_types: list[str], handovers: list[asyncio.Task[bool]]
    ) -> None:
        if handovers:
            # Not bounded here: each handover is (save_state aside), and the peer's own window
            # bounds how long it waits for this.
            await asyncio.wait(handovers)
        self._link.send_control(node_id, [wire.SETTLED, incarnation, agent_types])

    def _pass_on(self, taker: str, item: WorkItem) -> None:
        """Send a message that was to run here (its work ``item``) to node ``taker``, where its
        agent lives now."""
        fn = item[0]
        if fn == self._run_event:
            _, agent_id, message, ctx, hops = item
            try:
                body = self._encode(message)
            except Exception as exc:  # a local publish of a message that cannot cross nodes
                self._stats["undeliverable"] += 1
                logger.warning("publish to %s, which lives on node %s: %s", agent_id, taker, exc)
                return
            self._publish_to_taker(taker, agent_id, body, ctx, hops)
        elif fn == self._run_remote_event:
            _, agent_id, wire_body, ctx, hops = item
            self._publish_to_taker(
                taker, agent_id, (wire_body.type_name, wire_body.content_type, wire_body.payload), ctx, hops
            )
        elif fn == self._run_rpc:
            future = item[4]
            if not future.done():
                future.set_result(_MovedTo(taker))  # the caller's _call sends it there
        else:
            self._pass_remote_rpc(taker, *item[1:])

    def _publish_to_taker(
        self, taker: str, agent_id: AgentId, body: tuple[str, str, bytes], ctx: MessageContext, hops: int
    ) -> None:
        assert ctx.topic_id is not None
        self._link.stats["forwarded"] += 1
        targets = {taker: [agent_id]}
        self._spawn(self._send_publish_on(targets, body, ctx.topic_id, ctx.sender, ctx.message_id, hops + 1))

    async def _send_publish_on(
        self,
        targets: dict[str, list[AgentId]],
        body: tuple[str, str, bytes],
        topic_id: TopicId,
        sender: AgentId | None,
        message_id: str,
        hops: int,
    ) -> None:
        """A publish this node passes on (no publisher waits for it): a send timeout is a counted loss."""
        try:
            await self._send_publish(targets, body, topic_id, sender, message_id, hops)
        except SendTimeoutError as exc:
            self._stats["undeliverable"] += sum(len(ids) for ids in targets.values())
            logger.warning("publish to %s passed on: %s", topic_id, exc)

    def _pass_remote_rpc(
        self, taker: str, origin: str, req_id: int, agent_id: AgentId, body: Body, ctx: MessageContext, hops: int
    ) -> None:
        self._link.finish_inbound(origin, req_id)
        if ctx.cancellation_token.is_cancelled():
            self._link.reply(origin, req_id, wire.NOT_RUN, "cancelled before the handler started")
            return
        record = [
            wire.RPC,
            req_id,
            origin,
            ctx.message_id,
            [agent_id._type, agent_id._key],
            wire.agent_id_to_wire(ctx.sender),
            body.type_name,
            body.content_type,
            body.payload,
            self._view,
            hops,
        ]
        self._forward_rpc_record(taker, record, origin, req_id, len(body.payload) + 128, hops + 1)

    async def _run_handover(self, origin: str, req_id: int, agent_id: AgentId, state: bytes) -> None:
        if self._leaving:
            # It would have to pass the agent on again: the sender picks the next owner instead.
            self._link.reply(origin, req_id, wire.RETRY, f"node {self._name} is leaving the mesh")
            return
        if self._moved_out:
            self._moved_out.pop(agent_id, None)  # it comes back: messages for it run here again
        self._receiving += 1
        try:
            decoded = msgpack.unpackb(state, raw=False) if state else None

            async def load(agent: Any) -> None:
                if decoded is not None:
                    await agent.load_state(decoded)

            if agent_id in self._agents.instances:
                # Two copies (a node declared dead, or each side of a partition, made one): the state
                # handed over replaces this copy's (it is the copy that served while this node was
                # out of reach), visibly.
                self._stats["handover_conflicts"] += 1
                logger.warning(
                    "handover of %s from %s: a copy already lives here; it takes the handed-over state",
                    agent_id,
                    origin,
                )
            await self._agents.get(agent_id, prepare=load)
        except BaseException as exc:
            self._link.reply(origin, req_id, wire.ERROR, *wire.error_to_wire(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self._receiving -= 1
            self._received.set()
        self._link.reply(origin, req_id, wire.OK, "NoneType", "application/x-msgpack", msgpack.packb(None))
        owner = self._table.owner(agent_id.type, agent_id.key)
        if owner not in (None, self._node_id, origin) and not self._leaving:
            # The sender chose this node from a view that differs from ours (e.g. while a partition
            # heals): ours may not change again soon, so pass the agent on to the owner we see now.
            # (A sender that leaves is still the owner in our view until it is gone: not that case.)
            self._check_ownership()

    # -- agents -----------------------------------------------------------------------------------

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        """The metadata of ``agent``, from the node that owns it."""
        result: AgentMetadata = await self._agent_op("metadata", coerce_agent_id(agent))
        return result

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """The state of ``agent``, from the node that owns it."""
        result: Mapping[str, Any] = await self._agent_op("save", coerce_agent_id(agent))
        return result

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Load ``state`` into ``agent`` on the node that owns it."""
        agent_id = coerce_agent_id(agent)
        if self._table.owner(agent_id.type, agent_id.key) == self._node_id:
            agent_obj = await self._agents.get(agent_id)
            await agent_obj.load_state(state)
            return
        await self._agent_op("load", agent_id, msgpack.packb(dict(state), use_bin_type=True))

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        """The agent object itself, if it lives on this node.

        Raises:
            LookupError: the type is not registered anywhere.
            NotAccessibleError: the agent is owned by another node.
            TypeError: the agent is not an instance of ``type``.
        """
        agent_id = coerce_agent_id(id)
        owner = self._table.owner(agent_id.type, agent_id.key)
        if owner is None:
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        if owner != self._node_id:
            raise compat(NotAccessibleError)(
                f"Agent {agent_id} is owned by another node ({owner}); use messages to reach it"
            )
        agent = await self._agents.get(agent_id)
        if not isinstance(agent, type):
            raise TypeError(
                f"Agent with name {agent_id.type} is not of type {type.__name__}. "
                f"It is of type {agent.__class__.__name__}"
            )
        return agent

    @overload
    async def get(self, id: AgentId, /, *, lazy: bool = ...) -> AgentId: ...

    @overload
    async def get(self, type: AgentType | str, /, key: str = ..., *, lazy: bool = ...) -> AgentId: ...

    async def get(
        self, id_or_type: AgentId | AgentType | str, /, key: str = "default", *, lazy: bool = True
    ) -> AgentId:
        """The AgentId for a type and key; with ``lazy=False`` the agent is created on its owner now."""
        if isinstance(id_or_type, str):
            agent_id = AgentId(id_or_type, key)
        elif isinstance(id_or_type, AgentType):
            agent_id = AgentId(id_or_type.type, key)
        elif hasattr(id_or_type, "key"):
            agent_id = coerce_agent_id(id_or_type)
        else:
            agent_id = AgentId(str(getattr(id_or_type, "type", id_or_type)), key)
        if not lazy:
            await self._agent_op("get", agent_id)
        # autogen_core's flavour for autogen_core's objects, and for plain strings on a node that
        # hosts autogen_core agents (code written for autogen_core compares with its own AgentId).
        if is_autogen_object(id_or_type) or (isinstance(id_or_type, str) and self._autogen_flavoured):
            from . import autogen as _autogen

            return _autogen.to_autogen_id(agent_id)  # type: ignore[return-value]
        return agent_id

    async def save_state(self) -> Mapping[str, Any]:
        """The state of every agent instantiated on this node, by ``"type/key"``."""
        state: dict[str, dict[str, Any]] = {}
        for agent_id, agent in list(self._agents.instances.items()):
            state[str(agent_id)] = dict(await agent.save_state())
        return state

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Load states saved by :meth:`save_state` into agents of types this node hosts."""
        for agent_id_str, agent_state in state.items():
            agent_id = AgentId.from_str(agent_id_str)
            if self._agents.hosts(agent_id.type):
                agent = await self._agents.get(agent_id)
                await agent.load_state(agent_state)


def _default_error_allow_list() -> dict[str, type[BaseException]]:
    allowed: dict[str, type[BaseException]] = {}
    for value in vars(_errors).values():
        if isinstance(value, type) and issubclass(value, Exception):
            allowed[f"{value.__module__}.{value.__qualname__}"] = value
    return allowed
