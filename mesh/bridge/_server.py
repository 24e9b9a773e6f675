"""Host mode: a mesh node serves ``agents.AgentRpc``, so that stock AutoGen
``GrpcWorkerAgentRuntime`` workers connect to it as to a ``GrpcWorkerAgentRuntimeHost`` and join
the mesh.

Each connected worker gets a session with a proxy node of its own: the agent types the worker
registers become proxy types there, its subscriptions become mesh subscriptions there, and when
the worker disconnects the proxy node leaves the mesh and takes them all away. Requests a worker
sends are answered on its own stream under its own request ids, so two workers that both number
their requests from "1" never receive each other's replies (AutoGen issue #7016); requests to a
worker carry ids unique to this process.

Whoever can open a channel to the server acts in the mesh through a proxy node that holds the
mesh's keys, so on a node secured with CURVE the server refuses a non-loopback address unless
mutual TLS authenticates the workers (see :func:`~mesh.bridge._tls.check_exposure`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._errors import NodeStoppedError
from .._ids import AgentId
from .._message_context import MessageContext
from ._config import BridgeConfig
from ._connection import channel_options
from ._exchange import Exchange
from ._protos import CLIENT_ID_HEADER, Protos, load
from ._proxy import ProxyNodeOptions, WorkerAgentProxy, proxy_factory, start_proxy_node
from ._session import mesh_subscription, sub_proto, sub_spec
from ._tls import ServerTls, check_exposure

if TYPE_CHECKING:
    from .._node import MeshNode

logger = logging.getLogger("mesh.bridge")

# How long server.stop() lets in-flight RPCs finish before cancelling them.
STOP_GRACE_S = 1.0


class WorkerSession:
    """One connected worker: its proxy node and the exchange over its stream."""

    def __init__(self, protos: Protos, client_id: str, proxy_node: MeshNode, write: Any, config: BridgeConfig) -> None:
        self.client_id = client_id
        self.proxy_node = proxy_node
        self._write = write
        self._write_lock = asyncio.Lock()
        self.types: set[str] = set()
        self.exchange = Exchange(
            protos,
            proxy_node,
            self._send,
            f"the AutoGen worker {client_id}",
            config,
            event_id_prefix=f"agentmesh/{proxy_node.mesh}/",
            echo_prefix=None,
            inject_prefix=f"grpc-worker/{client_id}/",
            # A worker's publish comes back to it, as from a stock host: the worker delivers it to
            # its own subscribers (the sender excepted).
            skip_prefix=None,
        )

    async def _send(self, message: Any) -> None:
        async with self._write_lock:
            try:
                await self._write(message)
            except Exception as exc:  # the RPC ended: grpc raises several types here
                raise ConnectionError(f"the AutoGen worker {self.client_id} is gone: {exc!r}") from exc

    async def forward_call(self, target: AgentId, message: Any, ctx: MessageContext) -> Any:
        return await self.exchange.call(target, message, ctx)

    async def forward_publish(self, target: AgentId, message: Any, ctx: MessageContext) -> None:
        await self.exchange.publish(message, ctx)


class AgentRpcServer:
    """Serves ``agents.AgentRpc`` on ``node`` (host mode).

    Use it as ``async with AgentRpcServer(node, "127.0.0.1:50051") as server:``; stock workers then
    connect with ``GrpcWorkerAgentRuntime(host_address=...)``. Several nodes of one mesh may each
    run one; workers connected to any of them reach each other and the mesh's agents.

    Every client that opens a channel can register agent types and call and publish to any agent
    of the mesh, through a proxy node holding the mesh's keys. To serve beyond loopback, give TLS
    credentials, with ``tls_client_ca_file`` to admit only workers holding a certificate from that
    CA (mutual TLS)::

        AgentRpcServer(node, "0.0.0.0:50051", tls_cert_file="host.pem", tls_key_file="host.key",
                       tls_client_ca_file="workers-ca.pem")

    On a node secured with CURVE, a non-loopback address without mutual TLS is refused
    (``allow_insecure=True`` accepts it, with a warning); on an open node it is served with a
    warning, logged once.

    Args:
        node: the node to serve on (started).
        address: ``host:port`` to bind (port 0 picks a free one; see :attr:`port`).
        config: timings and bounds (see :class:`BridgeConfig`).
        proxy_host, secret_key_file, authorized_keys_dir: how each worker's proxy node binds and,
            in a mesh secured with CURVE, the node's key files (as for :class:`GrpcBridge`).
        tls_cert_file, tls_key_file: the server's certificate (chain) and private key, PEM; with
            them the server speaks TLS only.
        tls_client_ca_file: PEM CA certificates; a client must present a certificate they signed.
        allow_insecure: serve a secured node's mesh on a non-loopback address without mutual TLS.

    Raises:
        ValueError: an incomplete TLS set-up (e.g. a certificate without its key).
        SecurityConfigError: on start, a TLS file cannot be read, or a secured node would be
            served beyond loopback without mutual TLS (and ``allow_insecure`` is false).
    """

    def __init__(
        self,
        node: MeshNode,
        address: str = "127.0.0.1:0",
        *,
        config: BridgeConfig | None = None,
        proxy_host: str | None = None,
        secret_key_file: str | os.PathLike[str] | None = None,
        authorized_keys_dir: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
        tls_client_ca_file: str | os.PathLike[str] | None = None,
        allow_insecure: bool = False,
    ) -> None:
        self._tls = ServerTls.from_files(tls_cert_file, tls_key_file, tls_client_ca_file)
        self._allow_insecure = allow_insecure
        self._node = node
        self._address = address
        self._config = config or BridgeConfig()
        self._proxy_options = ProxyNodeOptions(proxy_host, secret_key_file, authorized_keys_dir)
        self._server: Any = None
        self._port: int | None = None
        self._sessions: dict[str, WorkerSession] = {}
        self._session_added = asyncio.Event()
        self._cleanups: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (after start)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` workers connect to (after start)."""
        return f"{self._address.rpartition(':')[0]}:{self.port}"

    @property
    def workers(self) -> list[str]:
        """Client ids of the connected workers."""
        return list(self._sessions)

    async def start(self) -> None:
        if self._server is not None:
            return
        if not self._node.running:
            raise NodeStoppedError("start the node before the server: `await node.start()`")
        self._proxy_options.check(self._node)
        check_exposure(self._node, self._address, self._tls, self._allow_insecure)
        protos = load()
        credentials = self._tls.credentials(protos.grpc) if self._tls is not None else None
        server = protos.grpc.aio.server(options=channel_options(self._config))
        protos.pb_grpc.add_AgentRpcServicer_to_server(_servicer(protos, self), server)
        try:
            if credentials is None:
                port = server.add_insecure_port(self._address)
            else:
                port = server.add_secure_port(self._address, credentials)
        except RuntimeError as exc:  # grpcio raises it when it cannot bind
            raise OSError(f"cannot bind {self._address} for the AgentRpc server: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot bind {self._address} for the AgentRpc server")
        await server.start()
        self._server, self._port = server, port
        logger.info(
            "host mode: serving AgentRpc for node %s at %s (%s)",
            self._node.name,
            self.address,
            "plaintext" if self._tls is None else "mutual TLS" if self._tls.authenticates_clients else "TLS",
        )

    async def stop(self) -> None:
        """Stop serving; every worker's proxies leave the mesh (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(STOP_GRACE_S)
        for client_id in list(self._sessions):
            self._drop(client_id)
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def __aenter__(self) -> AgentRpcServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- sessions ---------------------------------------------------------------------------------

    async def open_session(self, protos: Protos, client_id: str, write: Any) -> WorkerSession:
        if client_id in self._sessions:
            raise ValueError(f"client id {client_id} already has an open channel")
        proxy_node = await start_proxy_node(self._node, f"grpc-worker-{client_id[:8]}", self._proxy_options)
        session = WorkerSession(protos, client_id, proxy_node, write, self._config)
        session.exchange.start()
        self._sessions[client_id] = session
        self._session_added.set()
        self._session_added = asyncio.Event()
        logger.info("host mode: worker %s connected to node %s", client_id, self._node.name)
        return session

    def _drop(self, client_id: str) -> None:
        """Close a worker's session in a task of the server's own (the stream's task may be cancelled)."""
        session = self._sessions.pop(client_id, None)
        if session is None:
            return
        task = asyncio.get_running_loop().create_task(self._close_session(session))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _close_session(self, session: WorkerSession) -> None:
        await session.exchange.close(f"the AutoGen worker {session.client_id} disconnected")
        await session.proxy_node.stop()
        logger.info(
            "host mode: worker %s disconnected; its %d type(s) left the mesh", session.client_id, len(session.types)
        )

    async def session(self, client_id: str) -> WorkerSession | None:
        """The session of ``client_id``, waiting a little for its channel (a worker opens it first,
        but the two calls may be served in either order)."""
        try:
            async with asyncio.timeout(self._config.call_timeout_s):
                while client_id not in self._sessions:  # bounded by the timeout
                    await self._session_added.wait()
        except TimeoutError:
            return None
        return self._sessions[client_id]

    def other_hosts(self, session: WorkerSession, agent_type: str) -> list[str]:
        hosts = self._node.routing_table.type_hosts.get(agent_type, [])
        return [h for h in hosts if h != session.proxy_node.node_id]

    def subscriptions(self, protos: Protos) -> list[Any]:
        """Every shareable subscription of the mesh, once each."""
        seen: dict[tuple[str, str, str], Any] = {}
        for info in self._node.routing_table.nodes.values():
            for sub in info.subscriptions:
                if sub.key not in seen:
                    seen[sub.key] = sub_proto(protos, sub.id, sub.key)
        return list(seen.values())


def _client_id(context: Any) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == CLIENT_ID_HEADER:
            return str(value)
    return None


def _servicer(protos: Protos, server: AgentRpcServer) -> Any:
    """An ``AgentRpcServicer`` backed by ``server`` (the generated base class is loaded lazily)."""
    grpc = protos.grpc
    pb = protos.pb
    invalid = grpc.StatusCode.INVALID_ARGUMENT

    async def require_session(context: Any) -> WorkerSession:
        client_id = _client_id(context)
        if client_id is None:
            await context.abort(invalid, "client-id metadata not found.")
        assert client_id is not None
        session = await server.session(client_id)
        if session is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"client {client_id} has no open message channel: open it first"
            )
        assert session is not None
        return session

    base: Any = protos.pb_grpc.AgentRpcServicer

    class Servicer(base):  # type: ignore[misc]
        async def OpenChannel(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
            client_id = _client_id(context)
            if client_id is None:
                await context.abort(invalid, "client-id metadata not found.")
            assert client_id is not None
            try:
                session = await server.open_session(protos, client_id, context.write)
            except ValueError as exc:
                await context.abort(invalid, str(exc))
                return
            try:
                async for message in request_iterator:
                    waiting = session.exchange.on_message(message)
                    if waiting is not None:
                        await waiting
            finally:
                server._drop(client_id)

        async def OpenControlChannel(self, request_iterator: AsyncIterator[Any], context: Any) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "agent state operations are not served in host mode")

        async def RegisterAgent(self, request: Any, context: Any) -> Any:
            session = await require_session(context)
            others = server.other_hosts(session, request.type)
            if others:
                await context.abort(invalid, f"Agent type {request.type} already registered in the mesh.")
            if request.type not in session.types:
                try:
                    await session.proxy_node.register_factory(
                        request.type, proxy_factory(WorkerAgentProxy, session), expected_class=WorkerAgentProxy
                    )
                except ValueError as exc:
                    await context.abort(invalid, str(exc))
                session.types.add(request.type)
            return pb.RegisterAgentTypeResponse()

        async def AddSubscription(self, request: Any, context: Any) -> Any:
            session = await require_session(context)
            parsed = sub_spec(request.subscription)
            if parsed is None:
                await context.abort(invalid, "Invalid subscription message.")
            assert parsed is not None
            try:
                await session.proxy_node.add_subscription(mesh_subscription(*parsed))
            except ValueError as exc:
                await context.abort(invalid, str(exc))
            return pb.AddSubscriptionResponse()

        async def RemoveSubscription(self, request: Any, context: Any) -> Any:
            session = await require_session(context)
            try:
                await session.proxy_node.remove_subscription(request.id)
            except ValueError as exc:
                await context.abort(invalid, str(exc))
            return pb.RemoveSubscriptionResponse()

        async def GetSubscriptions(self, request: Any, context: Any) -> Any:
            if _client_id(context) is None:
                await context.abort(invalid, "client-id metadata not found.")
            return pb.GetSubscriptionsResponse(subscriptions=server.subscriptions(protos))

    return Servicer()
