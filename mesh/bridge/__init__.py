"""The gRPC bridge (extra ``grpc``): a mesh exchanges publishes and RPCs with agents behind a
standard AutoGen ``GrpcWorkerAgentRuntimeHost``, and, in host mode, standard AutoGen
``GrpcWorkerAgentRuntime`` workers connect to a mesh node directly.

grpc and autogen-ext's generated stubs are imported when a bridge or server starts, so importing
this package needs neither.
"""

from __future__ import annotations

from .._errors import SecurityConfigError
from ._bridge import GrpcBridge, capability, elected
from ._config import BridgeConfig
from ._proxy import HostAgentProxy, WorkerAgentProxy
from ._server import AgentRpcServer

__all__ = [
    "AgentRpcServer",
    "BridgeConfig",
    "GrpcBridge",
    "HostAgentProxy",
    "SecurityConfigError",
    "WorkerAgentProxy",
    "capability",
    "elected",
]
