"""A reference model of AutoGen's delivery semantics over a mesh: an oracle for routing tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .._ids import AgentId
from .._placement import owner as hrw_owner


@dataclass(frozen=True)
class ModelSubscription:
    kind: str  # "type" or "prefix"
    topic: str
    agent_type: str
    id: str

    def matches(self, topic_type: str) -> bool:
        return topic_type == self.topic if self.kind == "type" else topic_type.startswith(self.topic)


@dataclass
class ReferenceModel:
    """Which agents receive a publish or a send, given what each node registered.

    Mirrors DESIGN §2: subscriptions are mesh-global and de-duplicated by AutoGen's equality
    (same kind, topic and agent type), so the same subscription held by two nodes delivers once,
    while a TypeSubscription and a TypePrefixSubscription that both match deliver twice; the
    sender itself is skipped; a type hosted nowhere receives nothing; each AgentId is owned by
    one node (rendezvous hashing over the nodes hosting its type, or the node that registered
    that instance).
    """

    factories: dict[str, set[str]] = field(default_factory=dict)
    instances: dict[tuple[str, str], str] = field(default_factory=dict)
    subscriptions: dict[str, list[ModelSubscription]] = field(default_factory=dict)

    def register(self, node: str, agent_type: str) -> None:
        """A factory for ``agent_type`` on ``node``; ValueError if that node has the type already."""
        hosts = self.factories.setdefault(agent_type, set())
        if node in hosts:
            raise ValueError(f"Agent with type {agent_type} already exists.")
        hosts.add(node)

    def register_instance(self, node: str, agent_id: AgentId) -> None:
        key = (agent_id.type, agent_id.key)
        if key in self.instances:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        self.instances[key] = node

    def add_subscription(self, node: str, sub: ModelSubscription) -> None:
        """ValueError when this node already holds an equal subscription (same id, or same kind,
        topic and agent type)."""
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

    def hosted(self, agent_type: str) -> bool:
        return bool(self.factories.get(agent_type)) or any(t == agent_type for t, _ in self.instances)

    def owner(self, agent_id: AgentId) -> str | None:
        node = self.instances.get((agent_id.type, agent_id.key))
        if node is not None:
            return node
        hosts = self.factories.get(agent_id.type) or {n for (t, _), n in self.instances.items() if t == agent_id.type}
        return hrw_owner(sorted(hosts), agent_id.type, agent_id.key) if hosts else None

    def recipients(self, topic_type: str, source: str, sender: AgentId | None = None) -> Counter[AgentId]:
        """The multiset of AgentIds a publish reaches."""
        distinct = {
            (s.kind, s.topic, s.agent_type)
            for held in self.subscriptions.values()
            for s in held
            if s.matches(topic_type)
        }
        result: Counter[AgentId] = Counter()
        for _, _, agent_type in distinct:
            agent_id = AgentId(agent_type, source)
            if agent_id != sender and self.hosted(agent_type):
                result[agent_id] += 1
        return result
