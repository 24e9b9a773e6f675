"""ClosureAgent: an agent defined by one async function."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol, TypeVar, get_type_hints

from ._agent import AgentMetadata, AgentRuntime
from ._base_agent import BaseAgent, _bind_subscriptions
from ._cancellation import CancellationToken
from ._context import AgentInstantiationContext
from ._errors import CantHandleException
from ._ids import AgentId, AgentType, TopicId
from ._message_context import MessageContext
from ._routed_agent import AnyType, get_types
from ._serialization import try_get_known_serializers_for_type
from ._subscriptions import Subscription

T = TypeVar("T")


def get_handled_types_from_closure(closure: Callable[..., Awaitable[Any]]) -> Sequence[type]:
    args = inspect.getfullargspec(closure)[0]
    if len(args) != 3:
        raise AssertionError("Closure must have 4 arguments")
    type_hints = get_type_hints(closure)
    if "return" not in type_hints:
        raise AssertionError("return not found in function signature")
    target_types = get_types(type_hints[args[1]])
    if target_types is None:
        raise AssertionError("Message type not found")
    if get_types(type_hints["return"]) is None:
        raise AssertionError("Return type not found")
    return target_types


class ClosureContext(Protocol):
    @property
    def id(self) -> AgentId: ...

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
    ) -> Any: ...

    async def publish_message(
        self, message: Any, topic_id: TopicId, *, cancellation_token: CancellationToken | None = None
    ) -> None: ...


class ClosureAgent(BaseAgent, ClosureContext):
    """Calls ``closure(agent, message, ctx)`` for each message; created by :meth:`register_closure`."""

    def __init__(
        self,
        description: str,
        closure: Callable[[ClosureContext, T, MessageContext], Awaitable[Any]],
        *,
        unknown_type_policy: Literal["error", "warn", "ignore"] = "warn",
    ) -> None:
        try:
            runtime = AgentInstantiationContext.current_runtime()
            id = AgentInstantiationContext.current_agent_id()
        except Exception as e:
            raise RuntimeError(
                "ClosureAgent must be instantiated within the context of an AgentRuntime. It cannot be directly "
                "instantiated."
            ) from e
        self._runtime: AgentRuntime = runtime
        self._id: AgentId = id
        self._description = description
        self._expected_types = get_handled_types_from_closure(closure)
        self._closure = closure
        self._unknown_type_policy = unknown_type_policy
        super().__init__(description)

    @property
    def metadata(self) -> AgentMetadata:
        return AgentMetadata(key=self._id.key, type=self._id.type, description=self._description)

    @property
    def id(self) -> AgentId:
        return self._id

    @property
    def runtime(self) -> AgentRuntime:
        return self._runtime

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        if type(message) not in self._expected_types and AnyType not in self._expected_types:
            if self._unknown_type_policy == "warn":
                warnings.warn(
                    f"Message type {type(message)} not in target types {self._expected_types} of {self.id}. Set "
                    "unknown_type_policy to 'error' to raise an exception, or 'ignore' to suppress this warning.",
                    stacklevel=1,
                )
                return None
            if self._unknown_type_policy == "error":
                raise CantHandleException(
                    f"Message type {type(message)} not in target types {self._expected_types} of {self.id}. Set "
                    "unknown_type_policy to 'warn' to suppress this exception, or 'ignore' to suppress this warning."
                )
        return await self._closure(self, message, ctx)

    async def save_state(self) -> Mapping[str, Any]:
        """Closure agents have no state: always ``{}``."""
        return {}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        """Closure agents have no state: does nothing."""

    @classmethod
    async def register_closure(
        cls,
        runtime: AgentRuntime,
        type: str,
        closure: Callable[[ClosureContext, T, MessageContext], Awaitable[Any]],
        *,
        unknown_type_policy: Literal["error", "warn", "ignore"] = "warn",
        skip_direct_message_subscription: bool = False,
        description: str = "",
        subscriptions: Callable[[], list[Subscription] | Awaitable[list[Subscription]]] | None = None,
    ) -> AgentType:
        """Register an agent type whose every instance handles messages with ``closure``."""

        def factory() -> ClosureAgent:
            return ClosureAgent(description=description, closure=closure, unknown_type_policy=unknown_type_policy)

        assert len(cls._unbound_subscriptions()) == 0, "Closure agents are expected to have no class subscriptions"
        agent_type = await cls.register(
            runtime=runtime,
            type=type,
            factory=factory,
            skip_class_subscriptions=True,
            skip_direct_message_subscription=skip_direct_message_subscription,
        )
        if subscriptions is not None:
            for subscription in await _bind_subscriptions(agent_type, [subscriptions]):
                await runtime.add_subscription(subscription)
        for message_type in get_handled_types_from_closure(closure):
            runtime.add_message_serializer(try_get_known_serializers_for_type(message_type))
        return agent_type
