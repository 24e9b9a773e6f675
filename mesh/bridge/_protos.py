"""The ``agents.AgentRpc`` stubs that ship with autogen-ext's gRPC runtime, imported on first use.

The wheel carries the generated modules but no ``.proto`` files, and newer grpcio-tools output
refuses autogen-core's protobuf pin, so the bridge uses these modules as they are (the ``grpc``
extra pins the autogen-ext minor line they come from) instead of copying generated code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INSTALL_HINT = "the gRPC bridge needs the grpc extra: pip install 'agentmesh-zmq[grpc]'"

# CloudEvent attributes and values of AutoGen's protocol (autogen_ext.runtimes.grpc._constants).
DATA_CONTENT_TYPE_ATTR = "datacontenttype"
DATA_SCHEMA_ATTR = "dataschema"
AGENT_SENDER_TYPE_ATTR = "agagentsendertype"
AGENT_SENDER_KEY_ATTR = "agagentsenderkey"
MESSAGE_KIND_ATTR = "agmsgkind"
MESSAGE_KIND_PUBLISH = "publish"
CLIENT_ID_HEADER = "client-id"


@dataclass(frozen=True)
class Protos:
    """The grpc module and the generated ``agent_worker`` and ``cloudevent`` modules."""

    grpc: Any
    pb: Any
    pb_grpc: Any
    ce: Any
    any_pb2: Any


_loaded: Protos | None = None


def load() -> Protos:
    """Import grpc and the stubs, or raise ImportError saying which extra to install."""
    global _loaded
    if _loaded is None:
        try:
            import grpc
            import grpc.aio
            from autogen_ext.runtimes.grpc.protos import agent_worker_pb2, agent_worker_pb2_grpc, cloudevent_pb2
            from google.protobuf import any_pb2
        except ImportError as exc:
            raise ImportError(f"{INSTALL_HINT} ({exc})") from exc
        _loaded = Protos(grpc, agent_worker_pb2, agent_worker_pb2_grpc, cloudevent_pb2, any_pb2)
    return _loaded
