"""Running unmodified ``autogen_core`` agents on a MeshNode.

Imported only when autogen_core is in use. At this boundary the mesh's ids, topics and contexts
become autogen_core's, and autogen_core's own context variables (agent instantiation, and the
handler context that ``DefaultTopicId()`` reads) are set for those agents.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import autogen_core
from autogen_core import MessageHandlerContext as _AgMessageHandlerContext

from ._ids import AgentId, TopicId
from ._message_context import MessageContext


def to_autogen_id(agent_id: AgentId) -> autogen_core.AgentId:
    return autogen_core.AgentId(agent_id.type, agent_id.key)


def to_autogen_topic(topic_id: TopicId) -> autogen_core.TopicId:
    return autogen_core.TopicId(topic_id.type, topic_id.source)


def instantiation_context(runtime: Any, agent_id: AgentId) -> AbstractContextManager[None]:
    """autogen_core's AgentInstantiationContext, populated for ``agent_id``."""
    cm: AbstractContextManager[None] = autogen_core.AgentInstantiationContext.populate_context(
        (runtime, to_autogen_id(agent_id))
    )
    return cm


async def deliver(agent: Any, message: Any, ctx: MessageContext) -> Any:
    """Call an autogen_core agent's handler with autogen_core's context and ids."""
    ag_ctx = autogen_core.MessageContext(
        sender=to_autogen_id(ctx.sender) if ctx.sender is not None else None,
        topic_id=to_autogen_topic(ctx.topic_id) if ctx.topic_id is not None else None,
        is_rpc=ctx.is_rpc,
        cancellation_token=ctx.cancellation_token,  # type: ignore[arg-type]
        message_id=ctx.message_id,
    )
    with _AgMessageHandlerContext.populate_context(agent.id):
        return await agent.on_message(message, ag_ctx)
