"""A reference model of AutoGen's delivery semantics over a mesh: an oracle for routing tests."""

from __future__ import annotations

import inspect
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .._context import SubscriptionInstantiationContext
from .._ids import AgentId, AgentType
from .._placement import owner as hrw_owner


@dataclass(frozen=True)
class ModelSubscription:
    """A subscription as the model sees it.

    Attributes:
        kind: ``"type"`` (a ``TypeSubscription``, ``DefaultSubscription`` included) or
            ``"prefix"`` (a ``TypePrefixSubscription``).
        topic: the topic type, or the topic type prefix.
        agent_type: the agent type it maps topics to (the topic source becomes the key).
        id: the subscription's id (what ``remove_subscription`` takes).
    """

    kind: str
    topic: str
    agent_type: str
    id: str

    @classmethod
    def of(cls, subscription: Any) -> ModelSubscription:
        """The model of a real Type/Default/TypePrefix subscription (mesh's or autogen_core's).

        Raises:
            TypeError: another kind of subscription (those are not shared mesh-wide).
        """
        prefix = getattr(subscription, "topic_type_prefix", None)
        if isinstance(prefix, str):
            return cls("prefix", prefix, str(subscription.agent_type), str(subscription.id))
        topic = getattr(subscription, "topic_type", None)
        if isinstance(topic, str):
            return cls("type", topic, str(subscription.agent_type), str(subscription.id))
        raise TypeError(f"the model knows Type and TypePrefix subscriptions, not {type(subscription).__name__}")

    def matches(self, topic_type: str) -> bool:
        return topic_type == self.topic if self.kind == "type" else topic_type.startswith(self.topic)


def class_subscriptions(agent_class: type[Any], agent_type: str) -> list[Any]:
    """The subscriptions ``agent_class.register(node, agent_type, ...)`` adds from the class's
    decorators (``@type_subscription``, ``@default_subscription``), built as the runtime builds them."""
    unbound = getattr(agent_class, "_unbound_subscriptions", None)
    if unbound is None:
        return []
    subscriptions: list[Any] = []
    with SubscriptionInstantiationContext.populate_context(AgentType(agent_type)):
        for make in unbound():
            made = make()
            if inspect.isawaitable(made):
                close = getattr(made, "close", None)
                if close is not None:
                    close()
                raise TypeError(f"{agent_class.__name__} builds its subscriptions asynchronously; pass them yourself")
            subscriptions.extend(made)
    return subscriptions


@dataclass
class ReferenceModel:
    """Which agents receive a publish or a send, given what each node registered: an oracle for
    routing tests (the one the mesh's own stateful test compares every step with).

    Feed it the same registrations and subscriptions as the mesh, naming every node by its
    ``node.node_id`` (placement hashes node ids, so :meth:`owner` then names the same node as the
    mesh does), and ask it what a publish or a send must reach:

    - :meth:`recipients` for a publish: the multiset of AgentIds it reaches. Subscriptions are
      mesh-global and de-duplicated by AutoGen's equality (same kind, topic and agent type), so
      the same subscription held by two nodes delivers once, while a TypeSubscription and a
      TypePrefixSubscription that both match deliver twice; the sender itself is skipped; a type
      hosted nowhere receives nothing.
    - :meth:`owner` for a send: the node that handles messages to an AgentId (rendezvous hashing
      over the nodes hosting its type, or the node that registered that very instance); ``None``
      means the send raises ``UnknownAgentTypeError``.

    Registration calls raise ``ValueError`` exactly where the mesh's do, so a test can expect the
    same outcome from both. :meth:`register_agent` and :meth:`register_agent_instance` mirror
    ``BaseAgent.register`` and ``BaseAgent.register_instance`` (class subscriptions and the
    direct-message subscription included); :meth:`register`, :meth:`register_instance` and
    :meth:`add_subscription` mirror the node's own methods.
    """

    factories: dict[str, set[str]] = field(default_factory=dict)
    instances: dict[tuple[str, str], str] = field(default_factory=dict)
    subscriptions: dict[str, list[ModelSubscription]] = field(default_factory=dict)
    classes: dict[tuple[str, str], str] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count, repr=False, compare=False)

    # -- registration -----------------------------------------------------------------------------

    def register(self, node: str, agent_type: str) -> None:
        """A factory for ``agent_type`` on ``node`` (``node.register_factory``); ValueError if
        that node has the type already, or another node has instances of it."""
        hosts = self.factories.setdefault(agent_type, set())
        instance_nodes = {n for (t, _), n in self.instances.items() if t == agent_type}
        if node in hosts or node in instance_nodes:
            raise ValueError(f"Agent with type {agent_type} already exists.")
        if instance_nodes:
            raise ValueError(f"agent type {agent_type!r} is registered with instances on another node")
        hosts.add(node)

    def register_instance(self, node: str, agent_id: AgentId) -> None:
        """One agent object on ``node`` (``node.register_agent_instance``); ValueError if that
        AgentId is registered already, or the type has a factory anywhere."""
        key = (agent_id.type, agent_id.key)
        if key in self.instances:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if self.factories.get(agent_id.type):
            raise ValueError(f"agent type {agent_id.type!r} is registered with a factory")
        self.instances[key] = node

    def register_agent(
        self,
        node: str,
        agent_type: str,
        agent_class: type[Any] | None = None,
        *,
        skip_class_subscriptions: bool = False,
        skip_direct_message_subscription: bool = False,
    ) -> None:
        """Mirror ``await agent_class.register(node, agent_type, factory, ...)``: the factory, the
        class subscriptions, then ``TypePrefixSubscription("<type>:", type)``.

        Raises ValueError as the mesh does: the type is on this node already, or another node
        registered it with another class. As in AutoGen, a subscription that this node already
        holds raises after the type was registered (the type stays).
        """
        if agent_class is not None:
            fingerprint = f"{agent_class.__module__}.{agent_class.__qualname__}"
            for (other, registered_type), other_fingerprint in self.classes.items():
                hosted = other in self.factories.get(registered_type, ())
                if registered_type == agent_type and other != node and hosted and other_fingerprint != fingerprint:
                    raise ValueError(f"agent type {agent_type!r} is registered with class {other_fingerprint}")
        self.register(node, agent_type)
        if agent_class is not None:
            self.classes[(node, agent_type)] = f"{agent_class.__module__}.{agent_class.__qualname__}"
            if not skip_class_subscriptions:
                for sub in class_subscriptions(agent_class, agent_type):
                    self.add_subscription(node, sub)
        if not skip_direct_message_subscription:
            self.add_subscription(node, ModelSubscription("prefix", f"{agent_type}:", agent_type, self._new_id()))

    def register_agent_instance(
        self,
        node: str,
        agent_id: AgentId,
        agent_class: type[Any] | None = None,
        *,
        skip_class_subscriptions: bool = True,
        skip_direct_message_subscription: bool = False,
    ) -> None:
        """Mirror ``await agent.register_instance(node, agent_id, ...)``: the instance, the
        subscription ``TypeSubscription(agent_id.key, agent_id.type)``, the class subscriptions if
        asked, then the direct-message subscription unless this node holds it already."""
        self.register_instance(node, agent_id)
        self.add_subscription(node, ModelSubscription("type", agent_id.key, agent_id.type, self._new_id()))
        if agent_class is not None and not skip_class_subscriptions:
            for sub in class_subscriptions(agent_class, agent_id.type):
                self.add_subscription(node, sub)
        if not skip_direct_message_subscription:
            try:
                self.add_subscription(
                    node, ModelSubscription("prefix", f"{agent_id.type}:", agent_id.type, self._new_id())
                )
            except ValueError:
                pass  # another instance of this type on this node added it already

    def add_subscription(self, node: str, sub: ModelSubscription | Any) -> None:
        """``node.add_subscription(sub)``; ``sub`` is a :class:`ModelSubscription` or a real
        subscription. ValueError when this node already holds an equal subscription (same id, or
        same kind, topic and agent type)."""
        if not isinstance(sub, ModelSubscription):
            sub = ModelSubscription.of(sub)
        held = self.subscriptions.setdefault(node, [])
        for other in held:
            if other.id == sub.id or (other.kind, other.topic, other.agent_type) == (
                sub.kind,
                sub.topic,
                sub.agent_type,
            ):
                raise ValueError("Subscription already exists")
        held.append(sub)

    def remove_subscription(self, node: str, sub_id: str) -> None:
        """``node.remove_subscription(sub_id)``: drops this node's holding only."""
        held = self.subscriptions.get(node, [])
        for i, sub in enumerate(held):
            if sub.id == sub_id:
                del held[i]
                return
        raise ValueError("Subscription does not exist")

    def remove_node(self, node: str) -> None:
        """The node left or died: its registrations and its holdings of subscriptions go."""
        for hosts in self.factories.values():
            hosts.discard(node)
        self.instances = {k: n for k, n in self.instances.items() if n != node}
        self.subscriptions.pop(node, None)
        self.classes = {k: c for k, c in self.classes.items() if k[0] != node}

    # -- questions --------------------------------------------------------------------------------

    def hosted(self, agent_type: str) -> bool:
        """Whether some node hosts ``agent_type`` (a factory or an instance)."""
        return bool(self.factories.get(agent_type)) or any(t == agent_type for t, _ in self.instances)

    def owner(self, agent_id: AgentId) -> str | None:
        """The node that handles messages to ``agent_id``; ``None`` if no node hosts its type
        (a send then raises ``UnknownAgentTypeError``)."""
        node = self.instances.get((agent_id.type, agent_id.key))
        if node is not None:
            return node
        hosts = self.factories.get(agent_id.type) or {n for (t, _), n in self.instances.items() if t == agent_id.type}
        return hrw_owner(sorted(hosts), agent_id.type, agent_id.key) if hosts else None

    def recipients(self, topic_type: str, source: str, sender: AgentId | None = None) -> Counter[AgentId]:
        """The multiset of AgentIds a publish to ``TopicId(topic_type, source)`` reaches."""
        distinct = {
            (s.kind, s.topic, s.agent_type)
            for held in self.subscriptions.values()
            for s in held
            if s.matches(topic_type)
        }
        result: Counter[AgentId] = Counter()
        for _, _, agent_type in distinct:
            agent_id = AgentId(agent_type, source)
            if agent_id != sender and self._can_create(agent_id):
                result[agent_id] += 1
        return result

    def _can_create(self, agent_id: AgentId) -> bool:
        """A factory makes any key; a type with instances only has just those keys (a publish
        to another key of it reaches nobody, as in AutoGen)."""
        return bool(self.factories.get(agent_id.type)) or (agent_id.type, agent_id.key) in self.instances

    def _new_id(self) -> str:
        return f"model-{next(self._ids)}"
