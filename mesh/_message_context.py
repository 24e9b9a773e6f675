"""MessageContext: what a handler knows about the message it handles."""

from __future__ import annotations

from dataclasses import dataclass

from ._cancellation import CancellationToken
from ._ids import AgentId, TopicId


@dataclass
class MessageContext:
    sender: AgentId | None
    topic_id: TopicId | None
    is_rpc: bool
    cancellation_token: CancellationToken
    message_id: str
