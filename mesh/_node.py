"""MeshNode: one node of the mesh, and a complete agent runtime on its own."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TypeVar, overload

from ._agent import Agent, AgentMetadata
from ._agents import LocalAgents
from ._cancellation import CancellationToken
from ._config import MeshConfig
from ._context import MessageHandlerContext
from ._dispatch import Dispatcher
from ._errors import (
    AgentUnreachableError,
    MessageDroppedException,
    NodeStoppedError,
    NotAccessibleError,
    UnknownAgentTypeError,
)
from ._ids import AgentId, AgentType, TopicId, is_valid_agent_type
from ._intervention import DropMessage, InterventionHandler
from ._message_context import MessageContext
from ._routing import NodeInfo, RoutingTable, SubInfo, TypeInfo
from ._serialization import MessageSerializer, SerializerRegistry
from ._subscriptions import Subscription, TypePrefixSubscription, TypeSubscription

logger = logging.getLogger("mesh")

T = TypeVar("T", bound=Agent)

# The id of the agent whose handler runs (the same variable MessageHandlerContext reads).
_HANDLER_VAR: ContextVar[Any] = MessageHandlerContext._MESSAGE_HANDLER_CONTEXT


def _warn_if_none(value: Any, handler_name: str) -> None:
    if value is None:
        warnings.warn(
            f"Intervention handler {handler_name} returned None. This might be unintentional. "
            "Consider returning the original message or DropMessage explicitly.",
            RuntimeWarning,
            stacklevel=3,
        )


def _is_drop(value: Any) -> bool:
    return value is DropMessage or isinstance(value, DropMessage)


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
    if type(sub).__module__.startswith("autogen_core"):
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
    ) -> None:
        if discovery not in ("mdns", "none"):
            raise ValueError(f"discovery must be 'mdns' or 'none', not {discovery!r}")
        self._config = config or MeshConfig()
        self._node_id = node_id or uuid.uuid4().hex
        self._name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._mesh_name = mesh
        self._host = host
        self._port = port
        self._advertise = advertise
        self._seeds = tuple(seeds)
        self._discovery_mode = discovery
        self._mdns_interfaces = tuple(mdns_interfaces) if mdns_interfaces is not None else None
        self._interventions = list(intervention_handlers or ())
        self._ignore_unhandled = ignore_unhandled_exceptions
        self._rpc_timeout_s = rpc_timeout_s if rpc_timeout_s is not None else self._config.rpc_timeout_s
        self._incarnation = 0
        self._address: str | None = None

        self._agents = LocalAgents(self)
        self._serializers = SerializerRegistry()
        self._subscriptions: list[Any] = []
        self._custom_subscriptions: list[Any] = []
        self._warned_custom = False
        self._dispatcher = Dispatcher(max_workers=self._config.max_running_handlers, max_queued=self._config.max_queued)
        self._info = NodeInfo()
        self._table = RoutingTable({self._node_id: self._info})
        self._running = False
        self._start_task: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._background_exception: BaseException | None = None
        self._id_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stats: dict[str, int] = {
            "published": 0,
            "sent": 0,
            "delivered": 0,
            "handler_errors": 0,
            "undeliverable": 0,
            "dropped_by_intervention": 0,
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
        """The advertised endpoint, known after start."""
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

    def statistics(self) -> dict[str, Any]:
        """Counters of this node: messages, errors, losses, queue depth."""
        stats: dict[str, Any] = dict(self._stats)
        stats["queued"] = self._dispatcher.queued
        stats["running_handlers"] = self._dispatcher.busy
        stats["agents"] = len(self._agents.instances)
        return stats

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Start the node. Await the result: it completes once the node is bound and has synced
        with its peers. Calling it without ``await`` (as with SingleThreadedAgentRuntime) also
        starts the node, in the background."""
        if self._start_task is not None and not self._start_task.done():
            return self._start_task
        if self._running:
            raise RuntimeError("Runtime is already started")
        self._start_task = asyncio.get_running_loop().create_task(self._start(), name=f"mesh-start-{self._name}")
        self._start_task.add_done_callback(self._log_start_failure)
        return self._start_task

    @staticmethod
    def _log_start_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("node failed to start: %s", task.exception())

    async def _start(self) -> None:
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
        self._incarnation = max(self._incarnation + 1, time.time_ns() // 1_000_000)
        self._dispatcher.start()
        self._running = True
        logger.debug("node %s started (incarnation %d)", self._name, self._incarnation)

    async def stop(self) -> None:
        """Stop gracefully: finish queued and running handlers within ``config.stop_timeout_s``,
        then cancel what is left and fail calls still waiting. Idempotent; the node can be
        started again afterwards (new incarnation, registrations and subscriptions kept)."""
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
        finished = await self._dispatcher.stop(self._config.stop_timeout_s)
        if not finished:
            logger.warning("stop: handlers still running after %.1f s were cancelled", self._config.stop_timeout_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._running = False

    async def stop_when_idle(self) -> None:
        """Stop once nothing is queued or running on this node."""
        if self._start_task is not None and not self._start_task.done():
            await self._start_task
        if self._running:
            await self._dispatcher.join()
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
        agents = list(self._agents.instances.items())
        for agent_id, agent in agents:
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

    # -- registration -----------------------------------------------------------------------------

    async def register_factory(
        self,
        type: str | AgentType,
        agent_factory: Callable[[], T | Awaitable[T]],
        *,
        expected_class: type[T] | None = None,
    ) -> AgentType:
        """Register a factory for an agent type on this node and make it known mesh-wide."""
        if isinstance(type, AgentType):
            type_name = type.type
        elif isinstance(type, str):
            type_name = type
        else:
            type_name = getattr(type, "type", type)
        if not is_valid_agent_type(type_name):
            raise ValueError(rf"Invalid agent type: {type_name}. Allowed values MUST match the regex: `^[\w\-\.]+\Z`")
        self._agents.add_factory(type_name, agent_factory, expected_class)
        if expected_class is not None:
            self._learn_agent_class(expected_class)
        await self._registrations_changed()
        return AgentType(type_name)

    async def register_agent_instance(self, agent_instance: Agent, agent_id: AgentId) -> AgentId:
        """Register one agent object under ``agent_id``; messages to it are routed to this node."""
        agent_id = coerce_agent_id(agent_id)
        self._agents.check_instance(agent_instance, agent_id)
        await agent_instance.bind_id_and_runtime(id=agent_id, runtime=self)
        self._agents.add_instance(agent_instance, agent_id)
        self._learn_agent_class(type(agent_instance))
        await self._registrations_changed()
        return agent_id

    def _learn_agent_class(self, cls: type[Any]) -> None:
        handles = getattr(cls, "_handles_types", None)
        if callable(handles):
            try:
                for message_type, serializers in handles():
                    self._serializers.add_serializer(serializers)
                    self._serializers.learn_type(message_type)
            except ValueError:
                pass  # AutoGen raises for types it cannot serialize; they still work on this node
        produced = getattr(cls, "_produced_types", None)
        if callable(produced):
            for t in produced():
                self._serializers.learn_type(t)
        else:
            for handler in getattr(cls, "_discover_handlers", list)():
                for t in getattr(handler, "produces_types", ()):
                    self._serializers.learn_type(t)

    async def add_subscription(self, subscription: Subscription) -> None:
        """Add a subscription held by this node; Type and TypePrefix ones are shared mesh-wide."""
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
        return NodeInfo(types=types, subscriptions=subs)

    async def _registrations_changed(self) -> None:
        self._info = self._local_info()
        self._rebuild_table()

    def _rebuild_table(self) -> None:
        self._table = RoutingTable({self._node_id: self._info})

    # -- messaging --------------------------------------------------------------------------------

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
        itself excepted), on whichever node owns each recipient. Returns once it is queued."""
        if type(topic_id) is not TopicId:
            topic_id = coerce_topic_id(topic_id)
        if sender is not None and type(sender) is not AgentId:
            sender = coerce_agent_id(sender)
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
        recipients = self._table.recipients(topic_id.type, topic_id.source)
        if self._custom_subscriptions:
            recipients = recipients + [
                coerce_agent_id(s.map_to_agent(topic_id)) for s in self._custom_subscriptions if s.is_match(topic_id)
            ]
        if recipients:
            self._route_publish(message, topic_id, sender, cancellation_token, message_id, recipients)
        if _HANDLER_VAR.get(None) is None and self._dispatcher.running:
            await self._dispatcher.wait_for_room()

    def _route_publish(
        self,
        message: Any,
        topic_id: TopicId,
        sender: AgentId | None,
        token: CancellationToken,
        message_id: str,
        recipients: list[AgentId],
    ) -> None:
        me = self._node_id
        table = self._table
        submit = self._dispatcher.submit
        run = self._run_event
        for agent_id in recipients:
            if agent_id == sender:
                continue
            owner = table.owner(agent_id._type, agent_id._key)
            if owner == me:
                submit((run, agent_id, message, MessageContext(sender, topic_id, False, token, message_id)))
            else:
                self._stats["undeliverable"] += 1
                logger.warning("publish to %s: no live node hosts agent type %r", topic_id, agent_id.type)

    async def _run_event(self, agent_id: AgentId, message: Any, ctx: MessageContext) -> None:
        reset = _HANDLER_VAR.set(agent_id)
        try:
            agent = self._agents.instances.get(agent_id)
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
            UnknownAgentTypeError: no live node hosts the recipient's type (at once).
            AgentUnreachableError: the owner died or the link was lost before the reply.
            TimeoutError: ``timeout`` (or the node's ``rpc_timeout_s``) passed; the handler's
                cancellation token is cancelled too.
            Exception: whatever the handler raised (rebuilt by type across nodes where allowed).
        """
        if type(recipient) is not AgentId:
            recipient = coerce_agent_id(recipient)
        if sender is not None and type(sender) is not AgentId:
            sender = coerce_agent_id(sender)
        if cancellation_token is None:
            cancellation_token = CancellationToken()
        if message_id is None:
            message_id = self._new_message_id()
        owner = self._table.owner(recipient._type, recipient._key)
        if owner is None:
            raise UnknownAgentTypeError(
                f"Agent type {recipient.type!r} is not registered on any live node (recipient {recipient})"
            )
        if not self._running:
            raise NodeStoppedError("the node is not running: call `await node.start()` first")
        if self._interventions:
            ctx = MessageContext(sender, None, True, cancellation_token, message_id)
            for handler in self._interventions:
                changed = await handler.on_send(message, message_context=ctx, recipient=recipient)
                _warn_if_none(changed, "on_send")
                if _is_drop(changed):
                    self._stats["dropped_by_intervention"] += 1
                    raise MessageDroppedException()
                if changed is not None:
                    message = changed
        self._stats["sent"] += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        ctx = MessageContext(sender, None, True, cancellation_token, message_id)
        if owner == self._node_id:
            self._dispatcher.submit((self._run_rpc, recipient, message, ctx, future))
        else:
            raise AgentUnreachableError(f"no route to node {owner} for {recipient}")
        cancellation_token.link_future(future)
        limit = timeout if timeout is not None else self._rpc_timeout_s
        if limit is None:
            result = await future
        else:
            try:
                result = await asyncio.wait_for(asyncio.shield(future), limit)
            except TimeoutError:
                cancellation_token.cancel()
                raise TimeoutError(f"no reply from {recipient} within {limit} s") from None
        if self._interventions:
            for handler in self._interventions:
                changed = await handler.on_response(result, sender=recipient, recipient=sender)
                _warn_if_none(changed, "on_response")
                if _is_drop(changed):
                    self._stats["dropped_by_intervention"] += 1
                    raise MessageDroppedException()
                if changed is not None:
                    result = changed
        return result

    async def _run_rpc(self, agent_id: AgentId, message: Any, ctx: MessageContext, future: asyncio.Future[Any]) -> None:
        if future.done() or ctx.cancellation_token.is_cancelled():
            return  # cancelled before it started: the handler never runs
        reset = _HANDLER_VAR.set(agent_id)
        try:
            agent = self._agents.instances.get(agent_id)
            if agent is None:
                agent = await self._agents.get(agent_id)
            if agent_id in self._agents.foreign:
                from . import autogen as _autogen

                result = await _autogen.deliver(agent, message, ctx)
            else:
                result = await agent.on_message(message, ctx)
        except asyncio.CancelledError:
            if not future.done():
                future.cancel()
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

    # -- agents -----------------------------------------------------------------------------------

    def _owner_or_raise(self, agent_id: AgentId) -> str:
        owner = self._table.owner(agent_id.type, agent_id.key)
        if owner is None:
            raise UnknownAgentTypeError(f"Agent type {agent_id.type!r} is not registered on any live node")
        return owner

    async def _local_agent(self, agent_id: AgentId) -> Any:
        owner = self._owner_or_raise(agent_id)
        if owner != self._node_id:
            raise NotAccessibleError(f"Agent {agent_id} is owned by node {owner}, not this node")
        return await self._agents.get(agent_id)

    async def agent_metadata(self, agent: AgentId) -> AgentMetadata:
        """The metadata of ``agent``, from the node that owns it."""
        agent_obj = await self._local_agent(coerce_agent_id(agent))
        metadata: AgentMetadata = agent_obj.metadata
        return metadata

    async def agent_save_state(self, agent: AgentId) -> Mapping[str, Any]:
        """The state of ``agent``, from the node that owns it."""
        agent_obj = await self._local_agent(coerce_agent_id(agent))
        state: Mapping[str, Any] = await agent_obj.save_state()
        return state

    async def agent_load_state(self, agent: AgentId, state: Mapping[str, Any]) -> None:
        """Load ``state`` into ``agent`` on the node that owns it."""
        agent_obj = await self._local_agent(coerce_agent_id(agent))
        await agent_obj.load_state(state)

    async def try_get_underlying_agent_instance(self, id: AgentId, type: type[T] = Agent) -> T:  # type: ignore[assignment]
        """The agent object itself, if it lives on this node.

        Raises:
            LookupError: the type is not registered anywhere.
            NotAccessibleError: the agent is owned by another node.
            TypeError: the agent is not an instance of ``type``.
        """
        agent_id = coerce_agent_id(id)
        if not self._agents.hosts(agent_id.type) and not self._table.has_type(agent_id.type):
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        agent = await self._local_agent(agent_id)
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
            await self._local_agent(agent_id)
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
