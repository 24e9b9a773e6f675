"""BaseAgent, and the class decorators that attach subscriptions and handled types to it."""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, final

from ._agent import Agent, AgentMetadata, AgentRuntime
from ._cancellation import CancellationToken
from ._context import AgentInstantiationContext, SubscriptionInstantiationContext
from ._ids import AgentId, AgentType, TopicId
from ._message_context import MessageContext
from ._serialization import MessageSerializer, try_get_known_serializers_for_type
from ._subscriptions import DefaultSubscription, Subscription, TypePrefixSubscription, TypeSubscription

if TYPE_CHECKING:
    from typing import Self

UnboundSubscription = Callable[[], list[Subscription] | Awaitable[list[Subscription]]]
BaseAgentType = TypeVar("BaseAgentType", bound="BaseAgent")


def subscription_factory(
    subscription: UnboundSubscription,
) -> Callable[[type[BaseAgentType]], type[BaseAgentType]]:
    """:meta private:"""

    def decorator(cls: type[BaseAgentType]) -> type[BaseAgentType]:
        cls.internal_unbound_subscriptions_list.append(subscription)
        return cls

    return decorator


def handles(
    type: Any, serializer: MessageSerializer[Any] | list[MessageSerializer[Any]] | None = None
) -> Callable[[type[BaseAgentType]], type[BaseAgentType]]:
    """Class decorator: the agent handles ``type`` (registers its serializer with the runtime)."""

    def decorator(cls: type[BaseAgentType]) -> type[BaseAgentType]:
        if serializer is None:
            serializer_list = try_get_known_serializers_for_type(type)
        else:
            serializer_list = list(serializer) if isinstance(serializer, Sequence) else [serializer]
        if not serializer_list:
            raise ValueError(f"No serializers found for type {type}. Please provide an explicit serializer.")
        cls.internal_extra_handles_types.append((type, serializer_list))
        return cls

    return decorator


def default_subscription(cls: type[BaseAgentType] | None = None) -> Any:
    """Subscribe the agent type to the ``"default"`` topic type (the topic source is the agent key)."""
    decorator = subscription_factory(lambda: [DefaultSubscription()])
    return decorator if cls is None else decorator(cls)


def type_subscription(topic_type: str) -> Callable[[type[BaseAgentType]], type[BaseAgentType]]:
    """Subscribe the agent type to ``topic_type`` (the topic source is the agent key)."""
    return subscription_factory(lambda: [DefaultSubscription(topic_type=topic_type)])


async def _bind_subscriptions(agent_type: AgentType, unbound: list[UnboundSubscription]) -> list[Subscription]:
    subscriptions: list[Subscription] = []
    with SubscriptionInstantiationContext.populate_context(agent_type):
        for unbound_subscription in unbound:
            result = unbound_subscription()
            if inspect.isawaitable(result):
                result = await result
            subscriptions.extend(result)
    return subscriptions


class BaseAgent(ABC, Agent):
    """Base class for agents: binds to its runtime and id, and registers itself with ``register``."""

    internal_unbound_subscriptions_list: ClassVar[list[UnboundSubscription]] = []
    """:meta private:"""
    internal_extra_handles_types: ClassVar[list[tuple[type[Any], list[MessageSerializer[Any]]]]] = []
    """:meta private:"""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Class subscriptions are not inherited: every subclass starts with its own lists.
        cls.internal_extra_handles_types = []
        cls.internal_unbound_subscriptions_list = []

    @classmethod
    def _handles_types(cls) -> list[tuple[type[Any], list[MessageSerializer[Any]]]]:
        return cls.internal_extra_handles_types

    @classmethod
    def _unbound_subscriptions(cls) -> list[UnboundSubscription]:
        return cls.internal_unbound_subscriptions_list

    def __init__(self, description: str) -> None:
        if AgentInstantiationContext.is_in_factory_call():
            self._runtime: AgentRuntime = AgentInstantiationContext.current_runtime()
            self._id: AgentId = AgentInstantiationContext.current_agent_id()
        if not isinstance(description, str):
            raise ValueError("Agent description must be a string")
        self._description = description

    @property
    def metadata(self) -> AgentMetadata:
        assert self._id is not None
        return AgentMetadata(key=self._id.key, type=self._id.type, description=self._description)

    async def bind_id_and_runtime(self, id: AgentId, runtime: AgentRuntime) -> None:
        if hasattr(self, "_id") and self._id != id:
            raise RuntimeError("Agent is already bound to a different ID")
        if hasattr(self, "_runtime") and self._runtime is not runtime:
            raise RuntimeError("Agent is already bound to a different runtime")
        self._id = id
        self._runtime = runtime

    @property
    def type(self) -> str:
        return self.id.type

    @property
    def id(self) -> AgentId:
        return self._id

    @property
    def runtime(self) -> AgentRuntime:
        return self._runtime

    @final
    async def on_message(self, message: Any, ctx: MessageContext) -> Any:
        return await self.on_message_impl(message, ctx)

    @abstractmethod
    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any: ...

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any:
        """Send ``message`` to ``recipient`` as this agent and return the reply."""
        if cancellation_token is None:
            cancellation_token = CancellationToken()
        return await self._runtime.send_message(
            message,
            sender=self.id,
            recipient=recipient,
            cancellation_token=cancellation_token,
            message_id=message_id,
        )

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        cancellation_token: CancellationToken | None = None,
    ) -> None:
        """Publish ``message`` to ``topic_id`` as this agent."""
        await self._runtime.publish_message(message, topic_id, sender=self.id, cancellation_token=cancellation_token)

    async def save_state(self) -> Mapping[str, Any]:
        warnings.warn("save_state not implemented", stacklevel=2)
        return {}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        warnings.warn("load_state not implemented", stacklevel=2)

    async def close(self) -> None:
        pass

    async def register_instance(
        self,
        runtime: AgentRuntime,
        agent_id: AgentId,
        *,
        skip_class_subscriptions: bool = True,
        skip_direct_message_subscription: bool = False,
    ) -> AgentId:
        """Register this instance under ``agent_id`` and subscribe it to the topic type equal to its key."""
        agent_id = await runtime.register_agent_instance(agent_instance=self, agent_id=agent_id)
        await runtime.add_subscription(TypeSubscription(topic_type=agent_id.key, agent_type=agent_id.type))
        if not skip_class_subscriptions:
            for subscription in await _bind_subscriptions(AgentType(agent_id.type), self._unbound_subscriptions()):
                await runtime.add_subscription(subscription)
        if not skip_direct_message_subscription:
            try:
                # The prefix includes ":" so that it cannot collide with another agent type.
                await runtime.add_subscription(
                    TypePrefixSubscription(topic_type_prefix=agent_id.type + ":", agent_type=agent_id.type)
                )
            except ValueError:
                pass  # another instance of this type added it already
        for _message_type, serializer in self._handles_types():
            runtime.add_message_serializer(serializer)
        return agent_id

    @classmethod
    async def register(
        cls,
        runtime: AgentRuntime,
        type: str,
        factory: Callable[[], Self | Awaitable[Self]],
        *,
        skip_class_subscriptions: bool = False,
        skip_direct_message_subscription: bool = False,
    ) -> AgentType:
        """Register ``factory`` for agent type ``type`` with the class subscriptions and the
        direct-message subscription ``TypePrefixSubscription("<type>:", type)``."""
        agent_type = await runtime.register_factory(type=AgentType(type), agent_factory=factory, expected_class=cls)
        if not skip_class_subscriptions:
            for subscription in await _bind_subscriptions(agent_type, cls._unbound_subscriptions()):
                await runtime.add_subscription(subscription)
        if not skip_direct_message_subscription:
            await runtime.add_subscription(
                TypePrefixSubscription(topic_type_prefix=agent_type.type + ":", agent_type=agent_type.type)
            )
        for _message_type, serializer in cls._handles_types():
            runtime.add_message_serializer(serializer)
        return agent_type
