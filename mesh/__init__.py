"""agentmesh: AutoGen-style agents on a host-less mesh of ZeroMQ nodes.

The agent model has the names, signatures and semantics of ``autogen_core`` 0.7, so code moves
between them by changing one import. :class:`MeshNode` is the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._agent import Agent, AgentMetadata, AgentProxy, AgentRuntime
from ._base_agent import BaseAgent, default_subscription, handles, type_subscription
from ._cancellation import CancellationToken
from ._closure_agent import ClosureAgent, ClosureContext
from ._context import AgentInstantiationContext
from ._errors import (
    AgentTypeConflictError,
    AgentUnreachableError,
    CantHandleException,
    MeshError,
    MessageDroppedException,
    MessageTooLargeError,
    NodeStoppedError,
    NotAccessibleError,
    RemoteAgentError,
    SecurityConfigError,
    SendTimeoutError,
    SerializationError,
    UndeliverableException,
    UnknownAgentTypeError,
)
from ._ids import AgentId, AgentType, DefaultTopicId, TopicId
from ._intervention import DefaultInterventionHandler, DropMessage, InterventionHandler
from ._message_context import MessageContext
from ._routed_agent import RoutedAgent, event, message_handler, rpc
from ._serialization import (
    JSON_DATA_CONTENT_TYPE,
    MSGPACK_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    MessageSerializer,
    UnknownPayload,
    try_get_known_serializers_for_type,
)
from ._subscriptions import DefaultSubscription, Subscription, TypePrefixSubscription, TypeSubscription

if TYPE_CHECKING:
    from ._background import BackgroundNode
    from ._config import MeshConfig
    from ._node import MeshNode, PeerInfo

__all__ = [
    "JSON_DATA_CONTENT_TYPE",
    "MSGPACK_DATA_CONTENT_TYPE",
    "PROTOBUF_DATA_CONTENT_TYPE",
    "Agent",
    "AgentId",
    "AgentInstantiationContext",
    "AgentMetadata",
    "AgentProxy",
    "AgentRuntime",
    "AgentType",
    "AgentTypeConflictError",
    "AgentUnreachableError",
    "BackgroundNode",
    "BaseAgent",
    "CancellationToken",
    "CantHandleException",
    "ClosureAgent",
    "ClosureContext",
    "DefaultInterventionHandler",
    "DefaultSubscription",
    "DefaultTopicId",
    "DropMessage",
    "InterventionHandler",
    "MeshConfig",
    "MeshError",
    "MeshNode",
    "MessageContext",
    "MessageDroppedException",
    "MessageSerializer",
    "MessageTooLargeError",
    "NodeStoppedError",
    "NotAccessibleError",
    "PeerInfo",
    "RemoteAgentError",
    "RoutedAgent",
    "SecurityConfigError",
    "SendTimeoutError",
    "SerializationError",
    "Subscription",
    "TopicId",
    "TypePrefixSubscription",
    "TypeSubscription",
    "UndeliverableException",
    "UnknownAgentTypeError",
    "UnknownPayload",
    "default_subscription",
    "event",
    "handles",
    "message_handler",
    "rpc",
    "try_get_known_serializers_for_type",
    "type_subscription",
]

_LAZY = {"BackgroundNode": "._background", "MeshNode": "._node", "PeerInfo": "._node", "MeshConfig": "._config"}


def __getattr__(name: str) -> Any:
    # The node (and ZeroMQ with it) is imported on first use, so the pure core imports light.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'mesh' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
