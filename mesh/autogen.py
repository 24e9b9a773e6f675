"""Running unmodified ``autogen_core`` agents on a MeshNode.

Imported only when autogen_core is in use. At this boundary the mesh's ids, topics and contexts
become autogen_core's, and autogen_core's own context variables are set for its agents: the
agent-instantiation context, and the handler context that ``DefaultTopicId()`` reads. The latter
is private in autogen_core 0.7 (``MessageHandlerContext._MESSAGE_HANDLER_CONTEXT``), which is why
the ``autogen`` extra pins autogen-core to ``>=0.7,<0.8`` and :func:`check_compatible` fails loudly
if it ever moves.

Errors the node raises itself (``MessageDroppedException``, ``UnknownAgentTypeError``, ...) are
instances of both the mesh's class and autogen_core's, so code written for autogen_core catches
them unchanged.
"""

from __future__ import annotations

import json
import sys
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

import autogen_core
import autogen_core.exceptions

from . import _errors
from ._ids import AgentId, TopicId
from ._message_context import MessageContext

MIN_VERSION = (0, 7)
MAX_VERSION = (0, 8)


def check_compatible() -> ContextVar[Any]:
    """autogen_core's handler context variable; raises if this autogen_core does not have it."""
    version = tuple(int(p) for p in autogen_core.__version__.split(".")[:2])
    var = getattr(autogen_core.MessageHandlerContext, "_MESSAGE_HANDLER_CONTEXT", None)
    if not MIN_VERSION <= version < MAX_VERSION or not isinstance(var, ContextVar):
        raise ImportError(
            f"mesh.autogen supports autogen-core >=0.7,<0.8 (found {autogen_core.__version__}); install "
            "agentmesh-zmq[autogen] to get a matching version"
        )
    return var


_AG_HANDLER_VAR = check_compatible()


def to_autogen_id(agent_id: AgentId) -> autogen_core.AgentId:
    return autogen_core.AgentId(agent_id.type, agent_id.key)


def to_autogen_topic(topic_id: TopicId) -> autogen_core.TopicId:
    return autogen_core.TopicId(topic_id.type, topic_id.source)


def to_autogen_context(ctx: MessageContext) -> autogen_core.MessageContext:
    return autogen_core.MessageContext(
        sender=to_autogen_id(ctx.sender) if ctx.sender is not None else None,
        topic_id=to_autogen_topic(ctx.topic_id) if ctx.topic_id is not None else None,
        is_rpc=ctx.is_rpc,
        # The mesh's token has autogen_core's methods (cancel, is_cancelled, add_callback, link_future).
        cancellation_token=ctx.cancellation_token,  # type: ignore[arg-type]
        message_id=ctx.message_id,
    )


def instantiation_context(runtime: Any, agent_id: AgentId) -> AbstractContextManager[None]:
    """autogen_core's AgentInstantiationContext, populated for ``agent_id``."""
    cm: AbstractContextManager[None] = autogen_core.AgentInstantiationContext.populate_context(
        (runtime, to_autogen_id(agent_id))
    )
    return cm


async def deliver(agent: Any, message: Any, ctx: MessageContext) -> Any:
    """Call an autogen_core agent's handler with autogen_core's context and ids."""
    ag_ctx = to_autogen_context(ctx)
    token = _AG_HANDLER_VAR.set(agent.id)
    try:
        return await agent.on_message(message, ag_ctx)
    finally:
        _AG_HANDLER_VAR.reset(token)


class InterventionAdapter:
    """Gives an autogen_core intervention handler autogen_core's contexts and ids."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler

    async def on_send(self, message: Any, *, message_context: MessageContext, recipient: AgentId) -> Any:
        return await self._handler.on_send(
            message, message_context=to_autogen_context(message_context), recipient=to_autogen_id(recipient)
        )

    async def on_publish(self, message: Any, *, message_context: MessageContext) -> Any:
        return await self._handler.on_publish(message, message_context=to_autogen_context(message_context))

    async def on_response(self, message: Any, *, sender: AgentId, recipient: AgentId | None) -> Any:
        return await self._handler.on_response(
            message, sender=to_autogen_id(sender), recipient=to_autogen_id(recipient) if recipient is not None else None
        )


# -- errors ------------------------------------------------------------------------------------------

_AUTOGEN_COUNTERPARTS: dict[type[BaseException], type[BaseException]] = {
    _errors.MessageDroppedException: autogen_core.exceptions.MessageDroppedException,
    _errors.UndeliverableException: autogen_core.exceptions.UndeliverableException,
    _errors.NotAccessibleError: autogen_core.exceptions.NotAccessibleError,
    _errors.CantHandleException: autogen_core.exceptions.CantHandleException,
}


_HYBRIDS: dict[type[BaseException], type[BaseException]] = {}


def compatible_error(cls: type[BaseException]) -> type[BaseException]:
    """A subclass of ``cls`` that is also autogen_core's counterpart (if ``cls`` has one)."""
    hybrid = _HYBRIDS.get(cls)
    if hybrid is None:
        hybrid = _HYBRIDS[cls] = _make_hybrid(cls)
    return hybrid


def _make_hybrid(cls: type[BaseException]) -> type[BaseException]:
    counterparts = tuple(
        ag for ours, ag in _AUTOGEN_COUNTERPARTS.items() if issubclass(cls, ours) and not issubclass(cls, ag)
    )
    if not counterparts:
        return cls
    hybrid = type(cls.__name__, (cls, *counterparts), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
    return hybrid


# -- AgentChat events ----------------------------------------------------------------------------------


class AgentChatJsonSerializer:
    """AutoGen's JSON for AgentChat's pydantic models, read back with AgentChat's MessageFactory.

    AgentChat's group-chat events hold abstract ``BaseChatMessage``/``BaseAgentEvent`` fields that
    plain pydantic validation cannot instantiate; every nested object whose ``type`` names a message
    class AgentChat knows is rebuilt as that class first.
    """

    def __init__(self, cls: type[Any]) -> None:
        from autogen_agentchat.messages import MessageFactory

        self.cls = cls
        self._factory = MessageFactory()

    @property
    def data_content_type(self) -> str:
        return "application/json"

    @property
    def type_name(self) -> str:
        return self.cls.__name__

    def serialize(self, message: Any) -> bytes:
        data: str = message.model_dump_json()
        return data.encode("utf-8")

    def deserialize(self, payload: bytes) -> Any:
        return self.cls.model_validate(self._rebuild(json.loads(payload)))

    def _rebuild(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._rebuild(v) for v in value]
        if isinstance(value, dict):
            value = {k: self._rebuild(v) for k, v in value.items()}
            if isinstance(value.get("type"), str) and "source" in value:
                try:
                    return self._factory.create(value)
                except ValueError:
                    pass  # not a message type AgentChat knows: keep the plain value
        return value


def agentchat_serializer(cls: type[Any]) -> AgentChatJsonSerializer | None:
    """The AgentChat-aware serializer for a pydantic class of autogen_agentchat, else None."""
    if "autogen_agentchat.messages" not in sys.modules or not cls.__module__.startswith("autogen_agentchat"):
        return None
    return AgentChatJsonSerializer(cls)
