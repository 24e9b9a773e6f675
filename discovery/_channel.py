"""The channel through which membership talks to peers; the node that owns the sockets provides it."""

from __future__ import annotations

from typing import Any, Protocol

from ._record import MemberRecord


class GossipChannel(Protocol):
    """Sends membership messages. Implementations must keep one ordered channel per member, the
    same one that carries the node's data, so that a change is seen before data sent after it."""

    def send(self, member: MemberRecord, message: list[Any], *, handshake: bool) -> None:
        """Send to a member (``handshake``: the receiver may not know us as a member yet)."""

    def send_to_endpoint(self, endpoint: str, message: list[Any]) -> None:
        """Send a handshake message to an endpoint whose node is not a member."""
