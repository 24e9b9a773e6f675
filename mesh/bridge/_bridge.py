"""GrpcBridge: connects a mesh to a standard AutoGen gRPC host, from whichever node is elected.

Every node that runs a ``GrpcBridge`` for a host advertises the capability ``bridge:<host>``.
Among the live nodes with that capability, the one that wins rendezvous hashing (HRW) for the
host's address runs the bridge; the others stand by and hold nothing. Every node computes the same
winner from the same view, so when the active node dies or leaves, the next one takes over as
soon as its view drops the old one (the failure-detection bound).
"""

from __future__ import annotations

import asyncio
import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._errors import NodeStoppedError
from .._placement import owner
from ._config import BridgeConfig, check_host_address
from ._protos import load
from ._proxy import ProxyNodeOptions
from ._session import BridgeSession
from ._tls import ChannelTls

if TYPE_CHECKING:
    from .._node import MeshNode
    from .._routing import RoutingTable

logger = logging.getLogger("mesh.bridge")

ELECTION_KEY = "agentmesh.grpc-bridge"
MAX_RETRY_S = 30.0  # longest wait between attempts to take the bridge over after a failure


def capability(host_address: str) -> str:
    """The capability a node advertises when it can bridge to ``host_address``."""
    return f"bridge:{host_address}"


def elected(table: RoutingTable, host_address: str) -> str | None:
    """The node that runs the bridge to ``host_address`` in this view (None: no capable node)."""
    wanted = capability(host_address)
    candidates = [node_id for node_id, info in table.nodes.items() if wanted in info.capabilities]
    return owner(candidates, ELECTION_KEY, host_address)


class GrpcBridge:
    """Exchanges publishes and RPCs between a mesh and the agents behind a standard AutoGen host.

    Run one on any number of nodes of a mesh (a started :class:`~mesh.MeshNode`): one of them is
    elected and connects to the host as a worker; the others stand by and take over if it dies.
    Use it as ``async with GrpcBridge(node, "host:50051"):``, or call ``start()`` and ``stop()``.

    While active, the bridge hosts the standard side's agent types on a proxy node: a second node
    of the mesh in this process, joined through ``node``, that leaves the mesh (taking the proxied
    types with it) when the bridge stands down.

    Args:
        node: the node this bridge runs in (started).
        host_address: the host's gRPC address, ``host:port``.
        config: timings and bounds (see :class:`BridgeConfig`).
        proxy_host: the address the proxy node binds (default: the host part of ``node.address``).
        secret_key_file: for a mesh secured with CURVE, the node's secret key file (the proxy node
            uses the node's keys; default: ``AGENTMESH_SECRET_KEY_FILE``).
        authorized_keys_dir: likewise, the node's authorized keys directory, for per-node keys.
        tls: connect to the host with TLS, verified against the system's roots (implied by
            ``tls_ca_file`` and ``tls_cert_file``; default: plaintext, as the stock host serves).
        tls_ca_file: PEM CA certificates to verify the host's certificate with.
        tls_cert_file, tls_key_file: a client certificate and its key, PEM, for a host that
            requires one (mutual TLS).

    Raises:
        ValueError: ``host_address`` is not ``host:port``, or a client certificate without its key.
    """

    def __init__(
        self,
        node: MeshNode,
        host_address: str,
        *,
        config: BridgeConfig | None = None,
        proxy_host: str | None = None,
        secret_key_file: str | os.PathLike[str] | None = None,
        authorized_keys_dir: str | os.PathLike[str] | None = None,
        tls: bool = False,
        tls_ca_file: str | os.PathLike[str] | None = None,
        tls_cert_file: str | os.PathLike[str] | None = None,
        tls_key_file: str | os.PathLike[str] | None = None,
    ) -> None:
        check_host_address(host_address)
        self._tls = ChannelTls.from_files(tls, tls_ca_file, tls_cert_file, tls_key_file)
        self._credentials: Any = None
        self._node = node
        self._host = host_address
        self._config = config or BridgeConfig()
        self._proxy_options = ProxyNodeOptions(proxy_host, secret_key_file, authorized_keys_dir)
        self._session: BridgeSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._state = asyncio.Event()
        self._stopping = False

    @property
    def host_address(self) -> str:
        return self._host

    @property
    def node(self) -> MeshNode:
        return self._node

    @property
    def active(self) -> bool:
        """Whether this node is the elected bridge (connected or connecting)."""
        return self._session is not None

    @property
    def connected(self) -> bool:
        """Whether this node is the elected bridge and in step with the host."""
        return self._session is not None and self._session.connected.is_set()

    @property
    def proxy_node(self) -> MeshNode | None:
        """The node that hosts the proxies of the standard side while this bridge is active."""
        return self._session.proxy_node if self._session is not None else None

    @property
    def standard_types(self) -> frozenset[str]:
        """The agent types of the standard side, as last learned from the host."""
        return self._session.standard_types if self._session is not None else frozenset()

    @property
    def exported_types(self) -> frozenset[str]:
        """The mesh's agent types registered with the host on the current connection."""
        return self._session.exported_types if self._session is not None else frozenset()

    async def sync(self, timeout: float = 10.0) -> None:
        """Return once both sides were reconciled after this call: what was registered in the mesh
        or at the host before the call is known to the other side (unless the host refused it).

        Raises:
            TimeoutError: not within ``timeout`` seconds (e.g. the host is unreachable).
            RuntimeError: this node is not the active bridge.
        """
        session = self._session
        if session is None:
            raise RuntimeError(f"node {self._node.name} is not the active bridge to {self._host}")
        try:
            async with asyncio.timeout(timeout):
                await session.sync()
        except TimeoutError:
            raise TimeoutError(f"the bridge did not get in step with {self._host} within {timeout} s") from None

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {"active": self.active, "connected": self.connected}
        if self._session is not None:
            stats.update(self._session.statistics())
        return stats

    async def start(self) -> None:
        """Advertise the capability and take part in the election (idempotent)."""
        if self._task is not None:
            return
        protos = load()  # fail here, with the install hint, if grpc is missing
        if not self._node.running:
            raise NodeStoppedError("start the node before the bridge: `await node.start()`")
        self._proxy_options.check(self._node)
        # Read once, here, so that a missing file fails start() rather than every reconnection.
        self._credentials = self._tls.credentials(protos.grpc) if self._tls is not None else None
        self._stopping = False
        self._wake = asyncio.Event()
        self._node.add_view_listener(self._on_view_changed)
        await self._node.add_capability(capability(self._host))
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"bridge election {self._host}")

    async def stop(self) -> None:
        """Leave the election; if active, disconnect and withdraw the proxies (idempotent)."""
        self._stopping = True
        self._node.remove_view_listener(self._on_view_changed)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._end_session()
        if self._node.running:
            await self._node.remove_capability(capability(self._host))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Return once this node is the active bridge and in step with the host.

        Raises:
            TimeoutError: not within ``timeout`` seconds (another node may be the active one).
        """
        try:
            async with asyncio.timeout(timeout):
                while not self.connected:
                    await self._state.wait()
        except TimeoutError:
            raise TimeoutError(
                f"the bridge on node {self._node.name} did not connect to {self._host} within {timeout} s "
                f"(active here: {self.active})"
            ) from None

    async def __aenter__(self) -> GrpcBridge:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _on_view_changed(self) -> None:
        if self._wake is not None:
            self._wake.set()
        if self._session is not None:
            self._session.mesh_changed()

    def _elected_here(self) -> bool:
        return (
            not self._stopping
            and self._node.running
            and elected(self._node.routing_table, self._host) == self._node.node_id
        )

    async def _supervise(self) -> None:
        assert self._wake is not None
        failures = 0
        while True:  # until stop() cancels it
            self._wake.clear()
            wait_s = self._config.supervise_interval_s
            try:
                if self._elected_here() and self._session is None:
                    await self._begin_session()
                elif not self._elected_here() and self._session is not None:
                    logger.info("bridge to %s: node %s is no longer elected", self._host, self._node.name)
                    await self._end_session()
                failures = 0
            except Exception as exc:
                # E.g. the proxy node cannot bind: retried with back-off, the traceback logged once.
                failures += 1
                wait_s = min(wait_s * 2**failures, MAX_RETRY_S)
                logger.error(
                    "bridge to %s: cannot take the bridge over (%s); retrying in %.1f s",
                    self._host,
                    exc,
                    wait_s,
                    exc_info=failures == 1,
                )
                await self._end_session()
                await asyncio.sleep(wait_s)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), wait_s)
            except TimeoutError:
                pass

    async def _begin_session(self) -> None:
        logger.info("bridge to %s: node %s is elected; connecting", self._host, self._node.name)
        session = BridgeSession(
            load(),
            self._node,
            self._host,
            self._config,
            self._proxy_options,
            on_change=self._notify,
            credentials=self._credentials,
        )
        self._session = session
        self._notify()
        try:
            await session.start()
        except BaseException:
            self._session = None
            await session.aclose()
            raise

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self._notify()
            await session.aclose()

    def _notify(self) -> None:
        """Wake whoever waits for a change of role or connection state."""
        self._state.set()
        self._state = asyncio.Event()
