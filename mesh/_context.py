"""Context variables the runtime sets around agent construction and message handling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ._agent import AgentRuntime
    from ._ids import AgentId, AgentType


class AgentInstantiationContext:
    """Gives a factory or an agent's constructor the runtime and the id being created."""

    _AGENT_INSTANTIATION_CONTEXT_VAR: ClassVar[ContextVar[tuple[Any, Any]]] = ContextVar(
        "_mesh_agent_instantiation_context"
    )

    def __init__(self) -> None:
        raise RuntimeError(
            "AgentInstantiationContext cannot be instantiated. It is a static class that provides context "
            "management for agent instantiation."
        )

    @classmethod
    @contextmanager
    def populate_context(cls, ctx: tuple[AgentRuntime, AgentId]) -> Iterator[None]:
        """:meta private:"""
        token = cls._AGENT_INSTANTIATION_CONTEXT_VAR.set(ctx)
        try:
            yield
        finally:
            cls._AGENT_INSTANTIATION_CONTEXT_VAR.reset(token)

    @classmethod
    def current_runtime(cls) -> AgentRuntime:
        try:
            runtime: AgentRuntime = cls._AGENT_INSTANTIATION_CONTEXT_VAR.get()[0]
        except LookupError as e:
            raise RuntimeError(
                "AgentInstantiationContext.runtime() must be called within an instantiation context such as "
                "when the AgentRuntime is instantiating an agent. Mostly likely this was caused by directly "
                "instantiating an agent instead of using the AgentRuntime to do so."
            ) from e
        return runtime

    @classmethod
    def current_agent_id(cls) -> AgentId:
        try:
            agent_id: AgentId = cls._AGENT_INSTANTIATION_CONTEXT_VAR.get()[1]
        except LookupError as e:
            raise RuntimeError(
                "AgentInstantiationContext.agent_id() must be called within an instantiation context such as "
                "when the AgentRuntime is instantiating an agent. Mostly likely this was caused by directly "
                "instantiating an agent instead of using the AgentRuntime to do so."
            ) from e
        return agent_id

    @classmethod
    def is_in_factory_call(cls) -> bool:
        return cls._AGENT_INSTANTIATION_CONTEXT_VAR.get(None) is not None


class MessageHandlerContext:
    """The id of the agent whose handler is running (read by ``DefaultTopicId``)."""

    _MESSAGE_HANDLER_CONTEXT: ClassVar[ContextVar[Any]] = ContextVar("_mesh_message_handler_context")

    def __init__(self) -> None:
        raise RuntimeError(
            "MessageHandlerContext cannot be instantiated. It is a static class that provides context "
            "management for message handling."
        )

    @classmethod
    @contextmanager
    def populate_context(cls, ctx: AgentId) -> Iterator[None]:
        """:meta private:"""
        token = cls._MESSAGE_HANDLER_CONTEXT.set(ctx)
        try:
            yield
        finally:
            cls._MESSAGE_HANDLER_CONTEXT.reset(token)

    @classmethod
    def agent_id(cls) -> AgentId:
        try:
            agent_id: AgentId = cls._MESSAGE_HANDLER_CONTEXT.get()
        except LookupError as e:
            raise RuntimeError("MessageHandlerContext.agent_id() must be called within a message handler.") from e
        return agent_id


class SubscriptionInstantiationContext:
    """The agent type whose class subscriptions are being built (read by ``DefaultSubscription``)."""

    _SUBSCRIPTION_CONTEXT_VAR: ClassVar[ContextVar[Any]] = ContextVar("_mesh_subscription_context")

    def __init__(self) -> None:
        raise RuntimeError(
            "SubscriptionInstantiationContext cannot be instantiated. It is a static class that provides "
            "context management for subscription instantiation."
        )

    @classmethod
    @contextmanager
    def populate_context(cls, ctx: AgentType) -> Iterator[None]:
        """:meta private:"""
        token = cls._SUBSCRIPTION_CONTEXT_VAR.set(ctx)
        try:
            yield
        finally:
            cls._SUBSCRIPTION_CONTEXT_VAR.reset(token)

    @classmethod
    def agent_type(cls) -> AgentType:
        try:
            agent_type: AgentType = cls._SUBSCRIPTION_CONTEXT_VAR.get()
        except LookupError as e:
            raise RuntimeError(
                "SubscriptionInstantiationContext.runtime() must be called within an instantiation context such "
                "as when the AgentRuntime is instantiating an agent."
            ) from e
        return agent_type
