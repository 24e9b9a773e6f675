"""Intervention handlers: see, change or drop messages as they are submitted."""

from __future__ import annotations

from typing import Any, Protocol, final

from ._ids import AgentId
from ._message_context import MessageContext


@final
class DropMessage:
    """Marker type: an intervention handler returns it (the class itself) to drop the message."""


class InterventionHandler(Protocol):
    """Called by the node when a message is submitted (``on_send``, ``on_publish``) and when a reply
    comes back to the caller (``on_response``).

    Returning ``None`` is treated as "no change" with a warning; return :class:`DropMessage` to drop.
    On a mesh, ``on_send`` and ``on_publish`` run on the node where the message is submitted, and
    ``on_response`` on the caller's node.
    """

    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any | type[DropMessage]: ...

    async def on_publish(self, message: Any, *, message_context: MessageContext) -> Any | type[DropMessage]: ...

    async def on_response(
        self, message: Any, *, sender: AgentId, recipient: AgentId | None
    ) -> Any | type[DropMessage]: ...


class DefaultInterventionHandler(InterventionHandler):
    """Passes every message through unchanged; subclass and override what you need."""

    async def on_send(
        self, message: Any, *, message_context: MessageContext, recipient: AgentId
    ) -> Any | type[DropMessage]:
        return message

    async def on_publish(self, message: Any, *, message_context: MessageContext) -> Any | type[DropMessage]:
        return message

    async def on_response(self, message: Any, *, sender: AgentId, recipient: AgentId | None) -> Any | type[DropMessage]:
        return message
