"""Subscriptions: which topics an agent type receives, and which agent key each topic maps to."""

from __future__ import annotations

import uuid
from typing import Protocol, runtime_checkable

from ._context import SubscriptionInstantiationContext
from ._errors import CantHandleException
from ._ids import AgentId, AgentType, TopicId


@runtime_checkable
class Subscription(Protocol):
    """Defines the topics an agent is interested in.

    Only :class:`TypeSubscription`, :class:`TypePrefixSubscription` and :class:`DefaultSubscription`
    can be shared with other nodes; other implementations work for publishes made on their own node.
    """

    @property
    def id(self) -> str: ...

    def __eq__(self, other: object) -> bool: ...

    def is_match(self, topic_id: TopicId) -> bool: ...

    def map_to_agent(self, topic_id: TopicId) -> AgentId: ...


class TypeSubscription(Subscription):
    """Matches topics whose type equals ``topic_type``; the topic's source becomes the agent key."""

    def __init__(self, topic_type: str, agent_type: str | AgentType, id: str | None = None) -> None:
        self._topic_type = topic_type
        self._agent_type = agent_type.type if isinstance(agent_type, AgentType) else agent_type
        self._id = id or str(uuid.uuid4())

    @property
    def id(self) -> str:
        return self._id

    @property
    def topic_type(self) -> str:
        return self._topic_type

    @property
    def agent_type(self) -> str:
        return self._agent_type

    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type == self._topic_type

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise CantHandleException("TopicId does not match the subscription")
        return AgentId(type=self._agent_type, key=topic_id.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypeSubscription):
            return False
        return self.id == other.id or (self.agent_type == other.agent_type and self.topic_type == other.topic_type)

    def __repr__(self) -> str:
        return f"TypeSubscription(topic_type={self._topic_type!r}, agent_type={self._agent_type!r}, id={self._id!r})"


class TypePrefixSubscription(Subscription):
    """Matches topics whose type starts with ``topic_type_prefix``; the topic's source becomes the agent key."""

    def __init__(self, topic_type_prefix: str, agent_type: str | AgentType, id: str | None = None) -> None:
        self._topic_type_prefix = topic_type_prefix
        self._agent_type = agent_type.type if isinstance(agent_type, AgentType) else agent_type
        self._id = id or str(uuid.uuid4())

    @property
    def id(self) -> str:
        return self._id

    @property
    def topic_type_prefix(self) -> str:
        return self._topic_type_prefix

    @property
    def agent_type(self) -> str:
        return self._agent_type

    def is_match(self, topic_id: TopicId) -> bool:
        return topic_id.type.startswith(self._topic_type_prefix)

    def map_to_agent(self, topic_id: TopicId) -> AgentId:
        if not self.is_match(topic_id):
            raise CantHandleException("TopicId does not match the subscription")
        return AgentId(type=self._agent_type, key=topic_id.source)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TypePrefixSubscription):
            return False
        return self.id == other.id or (
            self.agent_type == other.agent_type and self.topic_type_prefix == other.topic_type_prefix
        )

    def __repr__(self) -> str:
        return (
            f"TypePrefixSubscription(topic_type_prefix={self._topic_type_prefix!r}, "
            f"agent_type={self._agent_type!r}, id={self._id!r})"
        )


class DefaultSubscription(TypeSubscription):
    """A :class:`TypeSubscription` to ``topic_type`` (default ``"default"``) for the agent type being
    registered, or for ``agent_type`` when given."""

    def __init__(self, topic_type: str = "default", agent_type: str | AgentType | None = None) -> None:
        if agent_type is None:
            try:
                agent_type = SubscriptionInstantiationContext.agent_type().type
            except RuntimeError as e:
                raise CantHandleException(
                    "If agent_type is not specified DefaultSubscription must be created within the subscription "
                    "callback in AgentRuntime.register"
                ) from e
        super().__init__(topic_type, agent_type)
