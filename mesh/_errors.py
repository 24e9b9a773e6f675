"""Exceptions: AutoGen's four, and the mesh's own under ``MeshError``."""

from __future__ import annotations

import sys


class CantHandleException(Exception):
    """Raised when a handler can't handle the exception."""


class UndeliverableException(Exception):
    """Raised when a message can't be delivered."""


class MessageDroppedException(Exception):
    """Raised when a message is dropped."""


class NotAccessibleError(Exception):
    """Tried to access a value that is not accessible, for example an agent that lives on another node."""


class MeshError(Exception):
    """Root of the mesh's own errors."""


class SecurityConfigError(MeshError, ValueError):
    """The security settings cannot be used: key files missing or unreadable, a seed naming a key
    that is not allowed, a bridge server exposed without the authentication the mesh requires."""


class UnknownAgentTypeError(MeshError, UndeliverableException, LookupError):
    """No live node hosts the recipient's agent type."""


class AgentUnreachableError(MeshError, UndeliverableException):
    """The node that owns the recipient died or the link to it was lost before the reply came."""


class AgentTypeConflictError(MeshError, ValueError):
    """An agent type is registered with different classes, or as a factory on one node and as
    instances on another."""


class RemoteAgentError(MeshError):
    """A remote handler raised an exception whose type the caller may not rebuild.

    Attributes:
        type_name: the remote exception's qualified type name.
        remote_message: ``str()`` of the remote exception.
        remote_traceback: the formatted traceback on the remote node.
    """

    def __init__(self, type_name: str, remote_message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {remote_message}")
        self.type_name = type_name
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class MessageTooLargeError(MeshError, ValueError):
    """An encoded message exceeds the configured maximum message size."""


class SerializationError(MeshError, ValueError):
    """A message cannot be encoded (no serializer fits it, or two classes share its type name)."""


class SendTimeoutError(MeshError, TimeoutError):
    """A sender waited for flow-control credit longer than ``send_timeout_s``."""


class NodeStoppedError(MeshError, RuntimeError):
    """The node is stopped, or stopped while the call was in flight."""


def compat(cls: type[BaseException]) -> type[BaseException]:
    """``cls``, or when autogen_core is in use a subclass that is also autogen_core's counterpart,
    so that code written for autogen_core catches the errors this runtime raises."""
    if "autogen_core" not in sys.modules:
        return cls
    from . import autogen

    return autogen.compatible_error(cls)


class RetryableRoutingError(MeshError):
    """:meta private: the receiving node does not own the recipient in its view; the sender retries."""
