"""Proxy agents, and the proxy node that hosts them.

A proxy agent stands in the mesh for an agent on AutoGen's side: the mesh routes publishes and
RPCs for its type to it as to any agent, and it forwards them over gRPC. Proxies live on a proxy
node of their own (a second :class:`MeshNode` in the same process, joined through the node the
bridge runs in) rather than on that node itself, because the set of proxied types must be able to
vanish at once: when a bridge stops being the active one, or a host-mode worker disconnects, its
proxy node leaves the mesh and every proxied type and subscription goes with it. A node cannot
unregister an agent type, and a stand-by bridge must not host proxy types (they would split keys
with the active one).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._base_agent import BaseAgent
from .._message_context import MessageContext
from .._serialization import SerializerRegistry, UnknownPayload

if TYPE_CHECKING:
    from .._ids import AgentId
    from .._node import MeshNode


class Forwarder(Protocol):
    """Where a proxy agent sends what it receives."""

    async def forward_call(self, target: AgentId, message: Any, ctx: MessageContext) -> Any: ...

    async def forward_publish(self, target: AgentId, message: Any, ctx: MessageContext) -> None: ...


class _ForwardingAgent(BaseAgent):
    def __init__(self, forwarder: Forwarder, description: str) -> None:
        super().__init__(description)
        self._forwarder = forwarder

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        if ctx.is_rpc:
            return await self._forwarder.forward_call(self.id, message, ctx)
        await self._forwarder.forward_publish(self.id, message, ctx)
        return None


class HostAgentProxy(_ForwardingAgent):
    """Stands for an agent behind a standard AutoGen host that the bridge connects to."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__(forwarder, "an agent behind an AutoGen gRPC host, reached through the bridge")


class WorkerAgentProxy(_ForwardingAgent):
    """Stands for an agent of a standard AutoGen worker connected to a node in host mode."""

    def __init__(self, forwarder: Forwarder) -> None:
        super().__init__(forwarder, "an agent of an AutoGen gRPC worker connected in host mode")


def fingerprint(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


HOST_PROXY_FINGERPRINT = fingerprint(HostAgentProxy)


def proxy_factory(cls: Callable[[Forwarder], _ForwardingAgent], forwarder: Forwarder) -> Callable[[], Any]:
    def create() -> Any:
        return cls(forwarder)

    return create


def host_of(address: str) -> str:
    """The host part of a ``tcp://host:port`` endpoint (``#<server key>`` of a secured node ignored)."""
    rest = address.partition("#")[0].removeprefix("tcp://")
    host = rest.rpartition(":")[0]
    return host.strip("[]")


@dataclass(frozen=True)
class ProxyNodeOptions:
    """How proxy nodes are made: where they bind, and the CURVE key files of a secured mesh."""

    bind_host: str | None = None
    secret_key_file: str | os.PathLike[str] | None = None
    authorized_keys_dir: str | os.PathLike[str] | None = None

    def check(self, parent: MeshNode) -> None:
        """Refuse at once a set-up whose proxy nodes could not join ``parent``'s secured mesh."""
        from .._errors import SecurityConfigError
        from .._security import ENV_SECRET_KEY_FILE

        if parent.public_key is not None and not (self.secret_key_file or os.environ.get(ENV_SECRET_KEY_FILE)):
            raise SecurityConfigError(
                f"node {parent.name} is secured with CURVE: give the bridge the node's secret_key_file (and "
                "authorized_keys_dir), or set AGENTMESH_SECRET_KEY_FILE, so that its proxy nodes can join"
            )


class _OpaqueSerializers(SerializerRegistry):
    """Leaves every body as it came (an :class:`UnknownPayload`, which the mesh sends on unchanged):
    a proxy forwards bytes, and decoding them with whatever class of that name this process knows
    could only lose fields or fail."""

    def decode(self, type_name: str, content_type: str, payload: bytes) -> Any:
        return UnknownPayload(type_name, content_type, payload)


@functools.cache
def _proxy_node_class() -> type[MeshNode]:
    from .._node import MeshNode

    class ProxyNode(MeshNode):
        """A mesh node that never decodes the bodies it receives (see _OpaqueSerializers)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # No public way yet to give a node its serializer registry (see the bridge's notes).
            self._serializers = _OpaqueSerializers()

    return ProxyNode


async def start_proxy_node(parent: MeshNode, suffix: str, options: ProxyNodeOptions) -> MeshNode:
    """A node of the same mesh that joins through ``parent``, shares its config and keys, and
    passes bodies through undecoded."""
    if parent.address is None or not parent.running:
        raise RuntimeError("the bridge's node must be started before the bridge")
    options.check(parent)
    node = _proxy_node_class()(
        name=f"{parent.name}/{suffix}",
        mesh=parent.mesh,
        host=options.bind_host or host_of(parent.address),
        discovery="none",
        seeds=[parent.address],
        config=parent.config,
        secret_key_file=options.secret_key_file,
        authorized_keys_dir=options.authorized_keys_dir,
    )
    await node.start()
    return node
