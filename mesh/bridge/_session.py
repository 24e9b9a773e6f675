"""The active bridge: its proxy node, its connection to the host, and keeping both sides in step.

A session runs while its node is the elected bridge for a host. It connects as a worker, and
reconnects with back-off whenever the connection is lost (a new client id each time, every type
and subscription registered again, in-flight outbound calls failed at once). On each connection
it reconciles, at every change of the mesh's view and every ``poll_interval_s``:

- the standard side: the host's subscriptions name its agent types (``"<type>:"`` prefix
  subscriptions); the proxy node hosts a proxy for each and mirrors their subscriptions;
- the mesh side: every agent type the mesh hosts (proxies excepted) is registered with the host,
  with the mesh's subscriptions for it, de-duplicated by AutoGen's equality.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import AgentUnreachableError, UnknownAgentTypeError
from .._ids import AgentId
from .._message_context import MessageContext
from .._subscriptions import TypePrefixSubscription, TypeSubscription
from ._config import BridgeConfig
from ._connection import HostConnection, HostConnectionLost
from ._exchange import Exchange
from ._protos import Protos
from ._proxy import HOST_PROXY_FINGERPRINT, HostAgentProxy, ProxyNodeOptions, proxy_factory, start_proxy_node

if TYPE_CHECKING:
    from .._node import MeshNode

logger = logging.getLogger("mesh.bridge")

SubSpec = tuple[str, str, str]  # (kind "type" | "prefix", topic type or prefix, agent type)


def sub_spec(sub: Any) -> tuple[str, SubSpec] | None:
    """(id, spec) of an ``agents.Subscription`` message, or None for a kind the mesh lacks."""
    kind = sub.WhichOneof("subscription")
    if kind == "typeSubscription":
        return sub.id, ("type", sub.typeSubscription.topic_type, sub.typeSubscription.agent_type)
    if kind == "typePrefixSubscription":
        return sub.id, ("prefix", sub.typePrefixSubscription.topic_type_prefix, sub.typePrefixSubscription.agent_type)
    return None


def sub_proto(protos: Protos, sub_id: str, spec: SubSpec) -> Any:
    pb = protos.pb
    kind, topic, agent_type = spec
    if kind == "type":
        return pb.Subscription(id=sub_id, typeSubscription=pb.TypeSubscription(topic_type=topic, agent_type=agent_type))
    return pb.Subscription(
        id=sub_id, typePrefixSubscription=pb.TypePrefixSubscription(topic_type_prefix=topic, agent_type=agent_type)
    )


def mesh_subscription(sub_id: str, spec: SubSpec) -> TypeSubscription | TypePrefixSubscription:
    kind, topic, agent_type = spec
    if kind == "type":
        return TypeSubscription(topic, agent_type, id=sub_id)
    return TypePrefixSubscription(topic, agent_type, id=sub_id)


class BridgeSession:
    """See the module docstring. Created by :class:`GrpcBridge` when its node is elected."""

    def __init__(
        self,
        protos: Protos,
        node: MeshNode,
        host_address: str,
        config: BridgeConfig,
        proxy_options: ProxyNodeOptions,
        on_change: Callable[[], None],
        credentials: Any = None,
    ) -> None:
        self._p = protos
        self._credentials = credentials
        self._proxy_options = proxy_options
        self._on_change = on_change
        self._node = node
        self._host = host_address
        self._config = config
        self._peer = f"the AutoGen host at {host_address}"
        # Ids of what this mesh sends to the host; whatever comes back with them is an echo.
        self._ours = f"agentmesh/{node.mesh}/"
        # Mesh message ids of events injected from this host: its proxies do not send them back.
        self._from_host = f"grpc-bridge/{host_address}/"
        self.proxy_node: MeshNode | None = None
        self._task: asyncio.Task[None] | None = None
        self._exchange: Exchange | None = None
        self._changed = asyncio.Event()
        self.connected = asyncio.Event()
        # What the host holds for the current connection (it forgets all of it when we disconnect).
        self._registered: set[str] = set()
        self._added: dict[str, SubSpec] = {}
        # What the proxy node holds (kept across reconnections).
        self._proxied: set[str] = set()
        self._mirrored: dict[str, SubSpec] = {}
        self.standard_types: frozenset[str] = frozenset()
        self._warned: set[str] = set()
        self.stats: dict[str, int] = {"connections": 0, "connection_losses": 0, "publishes_lost": 0}
        self.connected_at: float | None = None
        # Reconciliation rounds started and finished (for sync()).
        self._started = 0
        self._finished = 0
        self._round_done = asyncio.Event()

    async def start(self) -> None:
        self.proxy_node = await start_proxy_node(self._node, "grpc-bridge", self._proxy_options)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"bridge to {self._host}")

    async def aclose(self) -> None:
        """Disconnect and take the proxy node out of the mesh (its types and subscriptions go with it)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.proxy_node is not None:
            node, self.proxy_node = self.proxy_node, None
            await node.stop()

    def mesh_changed(self) -> None:
        self._changed.set()

    @property
    def exported_types(self) -> frozenset[str]:
        return frozenset(self._registered)

    async def sync(self) -> None:
        """Wait for a reconciliation round that starts after this call to finish."""
        need = self._started + 1
        self._changed.set()
        while self._finished < need:  # each round ends with _round_done set; bounded by the caller's timeout
            event = self._round_done
            await event.wait()

    def statistics(self) -> dict[str, int]:
        """This session's counters, with those of the current connection's exchange added in."""
        stats = dict(self.stats)
        if self._exchange is not None:
            for key, value in self._exchange.stats.items():
                stats[key] = stats.get(key, 0) + value
        return stats

    # -- what the proxies call --------------------------------------------------------------------

    async def forward_call(self, target: AgentId, message: Any, ctx: MessageContext) -> Any:
        exchange = self._exchange
        if exchange is None:
            raise AgentUnreachableError(f"cannot reach {target}: the bridge is not connected to {self._peer}")
        if target.type not in self.standard_types:
            raise UnknownAgentTypeError(f"agent type {target.type!r} is no longer registered at {self._peer}")
        return await exchange.call(target, message, ctx)

    async def forward_publish(self, target: AgentId, message: Any, ctx: MessageContext) -> None:
        exchange = self._exchange
        if exchange is not None:
            await exchange.publish(message, ctx)
        elif not ctx.message_id.startswith(self._from_host):
            self.stats["publishes_lost"] += 1
            logger.info("publish to %s not forwarded: the bridge is not connected to %s", ctx.topic_id, self._peer)

    # -- connection lifecycle ---------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._config.reconnect_initial_s
        failed_attempts = 0  # in a row, since the last connection that got in step
        while True:  # until aclose() cancels it
            conn = HostConnection(self._p, self._host, self._config, self._credentials)
            in_step = False  # a connection that got in step with the host resets the back-off
            try:
                await conn.open()
                await self._serve(conn)
            except HostConnectionLost as exc:
                in_step = self.connected.is_set()
                if in_step:
                    self.stats["connection_losses"] += 1
                    logger.warning("bridge: %s; reconnecting", exc)
                else:
                    failed_attempts += 1
                    # The first failure of a run is news (a wrong address, a host that is down); the
                    # retries after it are not.
                    level = logging.WARNING if failed_attempts == 1 else logging.INFO
                    logger.log(level, "bridge: %s; retrying in about %.2f s", exc, backoff)
            except Exception:
                in_step = self.connected.is_set()
                logger.exception("bridge: unexpected failure on the connection to %s; reconnecting", self._host)
            finally:
                await self._disconnect(conn)
            if in_step:
                backoff = self._config.reconnect_initial_s
                failed_attempts = 0
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self._config.reconnect_max_s)

    async def _serve(self, conn: HostConnection) -> None:
        assert self.proxy_node is not None
        exchange = Exchange(
            self._p,
            self.proxy_node,
            conn.send,
            self._peer,
            self._config,
            event_id_prefix=self._ours,
            echo_prefix=self._ours,
            inject_prefix=self._from_host,
            skip_prefix=self._from_host,
        )
        exchange.start()
        self._exchange = exchange
        self._registered.clear()
        self._added.clear()
        self.stats["connections"] += 1
        reader = asyncio.get_running_loop().create_task(self._read_loop(conn, exchange))
        reconciler = asyncio.get_running_loop().create_task(self._reconcile_loop(conn))
        try:
            done, _ = await asyncio.wait({reader, reconciler}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (reader, reconciler):
                task.cancel()
            await asyncio.gather(reader, reconciler, return_exceptions=True)

    async def _disconnect(self, conn: HostConnection) -> None:
        if self.connected.is_set():
            self.connected.clear()
            self._on_change()
        self.connected_at = None
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close(f"the connection to {self._peer} was lost")
        await conn.close()

    async def _read_loop(self, conn: HostConnection, exchange: Exchange) -> None:
        while True:  # until the stream fails (HostConnectionLost) or the session is cancelled
            message = await conn.read()
            waiting = exchange.on_message(message)
            if waiting is not None:
                await waiting

    async def _reconcile_loop(self, conn: HostConnection) -> None:
        while True:  # until the connection fails or the session is cancelled
            self._changed.clear()
            self._started += 1
            await self._reconcile(conn)
            self._finished = self._started
            self._round_done.set()
            self._round_done = asyncio.Event()
            if not self.connected.is_set():
                self.connected_at = time.monotonic()
                self.connected.set()
                self._on_change()
                logger.info(
                    "bridge connected to %s as %s: %d mesh type(s) registered, %d standard type(s) proxied",
                    self._host,
                    conn.client_id,
                    len(self._registered),
                    len(self.standard_types),
                )
            try:
                await asyncio.wait_for(self._changed.wait(), self._config.poll_interval_s)
            except TimeoutError:
                pass

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message, *args)

    # -- reconciliation -----------------------------------------------------------------------------

    async def _reconcile(self, conn: HostConnection) -> None:
        pb = self._p.pb
        response = await conn.unary("GetSubscriptions", pb.GetSubscriptionsRequest())
        host_subs: dict[str, SubSpec] = {}
        for sub in response.subscriptions:
            parsed = sub_spec(sub)
            if parsed is not None and not parsed[0].startswith(self._ours):
                host_subs[parsed[0]] = parsed[1]
        table = self._node.routing_table
        mesh_types = {
            name
            for name, prints in table.fingerprints.items()
            if any(fp != HOST_PROXY_FINGERPRINT for fp in prints.values())
        }
        candidates = {t for kind, topic, t in host_subs.values() if kind == "prefix" and topic == f"{t}:"}
        candidates -= self._registered
        for clash in sorted(candidates & mesh_types):
            self._warn_once(
                f"clash:{clash}",
                "agent type %r is registered both in the mesh and at %s: the bridge does not connect the two",
                clash,
                self._peer,
            )
        self.standard_types = frozenset(candidates - mesh_types)
        await self._mirror_standard_side(host_subs)
        await self._export_mesh_side(conn, table, mesh_types)

    async def _mirror_standard_side(self, host_subs: dict[str, SubSpec]) -> None:
        proxy = self.proxy_node
        assert proxy is not None
        for agent_type in sorted(self.standard_types - self._proxied):
            try:
                await proxy.register_factory(
                    agent_type, proxy_factory(HostAgentProxy, self), expected_class=HostAgentProxy
                )
            except ValueError as exc:  # AgentTypeConflictError: registered in the mesh meanwhile
                self._warn_once(f"proxy:{agent_type}", "bridge: cannot proxy agent type %r: %s", agent_type, exc)
                continue
            self._proxied.add(agent_type)
        wanted = {
            i: spec for i, spec in host_subs.items() if spec[2] in self.standard_types and spec[2] in self._proxied
        }
        for sub_id in [i for i in self._mirrored if self._mirrored[i] != wanted.get(i)]:
            del self._mirrored[sub_id]
            try:
                await proxy.remove_subscription(sub_id)
            except ValueError:
                pass
        for sub_id, spec in wanted.items():
            if sub_id in self._mirrored:
                continue
            try:
                await proxy.add_subscription(mesh_subscription(sub_id, spec))
            except ValueError as exc:
                self._warn_once(f"mirror:{sub_id}", "bridge: cannot mirror subscription %s %s: %s", sub_id, spec, exc)
                continue
            self._mirrored[sub_id] = spec

    async def _export_mesh_side(self, conn: HostConnection, table: Any, mesh_types: set[str]) -> None:
        pb = self._p.pb
        grpc = self._p.grpc
        for agent_type in sorted(mesh_types - self._registered):
            try:
                await conn.unary("RegisterAgent", pb.RegisterAgentTypeRequest(type=agent_type))
            except grpc.aio.AioRpcError as exc:
                # Another client holds the type: a standard worker, or the connection of a bridge
                # that is going away (the host frees its types when it notices). Retried each poll.
                self._warn_once(
                    f"register:{agent_type}",
                    "bridge: %s refused agent type %r (%s); retrying every %.1f s",
                    self._peer,
                    agent_type,
                    exc.details(),
                    self._config.poll_interval_s,
                )
                continue
            self._warned.discard(f"register:{agent_type}")
            self._registered.add(agent_type)
        wanted: dict[str, SubSpec] = {}
        for kind, topic, agent_type in table.subscription_holders:
            if agent_type in self._registered and agent_type in mesh_types:
                wanted[f"{self._ours}{kind}:{agent_type}:{topic}"] = (kind, topic, agent_type)
        for sub_id in [i for i in self._added if i not in wanted]:
            del self._added[sub_id]
            try:
                await conn.unary("RemoveSubscription", pb.RemoveSubscriptionRequest(id=sub_id))
            except grpc.aio.AioRpcError as exc:
                logger.info("bridge: removing subscription %s from %s failed: %s", sub_id, self._peer, exc.details())
        for sub_id, spec in wanted.items():
            if sub_id in self._added:
                continue
            try:
                await conn.unary(
                    "AddSubscription", pb.AddSubscriptionRequest(subscription=sub_proto(self._p, sub_id, spec))
                )
            except grpc.aio.AioRpcError as exc:
                self._warn_once(
                    f"subscribe:{sub_id}",
                    "bridge: %s refused subscription %s (%s); retrying",
                    self._peer,
                    spec,
                    exc.details(),
                )
                continue
            self._warned.discard(f"subscribe:{sub_id}")
            self._added[sub_id] = spec
