"""Stateful test of routing: random registrations, subscriptions, publishes and sends across 2-5
in-process nodes, compared after every step with a single-process reference model.

Hypothesis rules are synchronous: the mesh runs on an event loop in a portal thread and every
rule is one blocking call into it. After every step the mesh is quiesced, then the multiset of
(recipient, message id) deliveries is compared with the model's, and the placement invariant
(each key instantiated on exactly one node) is checked.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mesh import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    UnknownAgentTypeError,
    message_handler,
)
from mesh.testing import LocalMesh, ModelSubscription, ReferenceModel

AGENT_TYPES = ["alpha", "beta", "gamma"]
TOPICS = ["t1", "t2", "alpha:", "beta:x"]
KEYS = ["k1", "k2", "k3", "default"]


@dataclass
class Ping:
    n: int


class Recorder(RoutedAgent):
    """Records every delivery in the log of the run, with the node it ran on."""

    def __init__(self, log: list[tuple[AgentId, str, str]], node_name: str) -> None:
        super().__init__("records deliveries")
        self._log = log
        self._node_name = node_name

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> str:
        self._log.append((self.id, ctx.message_id, self._node_name))
        return f"{self.id}@{self._node_name}"


class MeshRouting(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal_cm: Any = None
        self.portal: BlockingPortal | None = None
        self.mesh: LocalMesh | None = None
        self.model = ReferenceModel()
        self.log: list[tuple[AgentId, str, str]] = []
        self.expected: Counter[tuple[AgentId, str]] = Counter()
        self.sub_ids: list[tuple[int, str]] = []  # (node index, subscription id)
        self.counter = 0

    # -- set-up -----------------------------------------------------------------------------------

    @initialize(n=st.integers(min_value=2, max_value=5))
    def start_mesh(self, n: int) -> None:
        self.portal_cm = start_blocking_portal()
        self.portal = self.portal_cm.__enter__()
        self.mesh = LocalMesh(n)
        self.call(self.mesh.__aenter__)

    def teardown(self) -> None:
        if self.portal is not None and self.mesh is not None:
            self.call(self.mesh.aclose)
        if self.portal_cm is not None:
            self.portal_cm.__exit__(None, None, None)

    def call(self, fn: Any, *args: Any) -> Any:
        assert self.portal is not None
        return self.portal.call(fn, *args)

    @property
    def nodes(self) -> list[Any]:
        assert self.mesh is not None
        return self.mesh.nodes

    def node_name(self, index: int) -> str:
        return str(self.nodes[index].node_id)

    def quiesce(self) -> None:
        assert self.mesh is not None
        self.call(self.mesh.quiesce)

    # -- rules ------------------------------------------------------------------------------------

    @rule(data=st.data(), agent_type=st.sampled_from(AGENT_TYPES))
    def register(self, data: st.DataObject, agent_type: str) -> None:
        index = data.draw(st.integers(0, len(self.nodes) - 1), label="node")
        node = self.nodes[index]
        log = self.log
        name = node.name
        try:
            self.model.register(self.node_name(index), agent_type)
        except ValueError:
            with pytest.raises(ValueError):
                self.call(Recorder.register, node, agent_type, lambda: Recorder(log, name))
            return
        # register() then adds the direct-message subscription "<type>:" held by this node; as in
        # AutoGen, it raises ValueError if the node holds an equal one already (the type stays).
        direct = ModelSubscription("prefix", f"{agent_type}:", agent_type, f"direct-{agent_type}-{index}")
        try:
            self.model.add_subscription(self.node_name(index), direct)
        except ValueError:
            with pytest.raises(ValueError, match="Subscription already exists"):
                self.call(Recorder.register, node, agent_type, lambda: Recorder(log, name))
            return
        self.call(Recorder.register, node, agent_type, lambda: Recorder(log, name))

    @rule(
        data=st.data(),
        kind=st.sampled_from(["type", "prefix"]),
        topic=st.sampled_from(TOPICS),
        agent_type=st.sampled_from(AGENT_TYPES),
    )
    def add_subscription(self, data: st.DataObject, kind: str, topic: str, agent_type: str) -> None:
        index = data.draw(st.integers(0, len(self.nodes) - 1), label="node")
        self.counter += 1
        sub_id = f"sub-{self.counter}"
        sub = (
            TypeSubscription(topic, agent_type, id=sub_id)
            if kind == "type"
            else TypePrefixSubscription(topic, agent_type, id=sub_id)
        )
        try:
            self.model.add_subscription(self.node_name(index), ModelSubscription(kind, topic, agent_type, sub_id))
        except ValueError:
            with pytest.raises(ValueError):
                self.call(self.nodes[index].add_subscription, sub)
            return
        self.call(self.nodes[index].add_subscription, sub)
        self.sub_ids.append((index, sub_id))

    @precondition(lambda self: bool(self.sub_ids))
    @rule(data=st.data())
    def remove_subscription(self, data: st.DataObject) -> None:
        index, sub_id = data.draw(st.sampled_from(self.sub_ids), label="subscription")
        self.sub_ids.remove((index, sub_id))
        self.model.remove_subscription(self.node_name(index), sub_id)
        self.call(self.nodes[index].remove_subscription, sub_id)

    @rule(
        data=st.data(),
        topic=st.sampled_from(TOPICS),
        source=st.sampled_from(KEYS),
        sender_type=st.none() | st.sampled_from(AGENT_TYPES),
    )
    def publish(self, data: st.DataObject, topic: str, source: str, sender_type: str | None) -> None:
        index = data.draw(st.integers(0, len(self.nodes) - 1), label="node")
        sender = AgentId(sender_type, source) if sender_type is not None else None
        self.counter += 1
        message_id = f"m{self.counter}"
        expected = self.model.recipients(topic, source, sender)
        for agent_id, count in expected.items():
            self.expected[(agent_id, message_id)] += count
        self.call(self._publish, index, topic, source, sender, message_id)

    async def _publish(self, index: int, topic: str, source: str, sender: AgentId | None, message_id: str) -> None:
        await self.nodes[index].publish_message(Ping(1), TopicId(topic, source), sender=sender, message_id=message_id)

    @rule(data=st.data(), agent_type=st.sampled_from(AGENT_TYPES), key=st.sampled_from(KEYS))
    def send(self, data: st.DataObject, agent_type: str, key: str) -> None:
        index = data.draw(st.integers(0, len(self.nodes) - 1), label="node")
        recipient = AgentId(agent_type, key)
        self.counter += 1
        message_id = f"m{self.counter}"
        owner = self.model.owner(recipient)
        if owner is None:
            with pytest.raises(UnknownAgentTypeError):
                self.call(self._send, index, recipient, message_id)
            return
        reply = self.call(self._send, index, recipient, message_id)
        owner_name = next(n.name for n in self.nodes if n.node_id == owner)
        assert reply == f"{recipient}@{owner_name}"
        self.expected[(recipient, message_id)] += 1

    async def _send(self, index: int, recipient: AgentId, message_id: str) -> Any:
        return await self.nodes[index].send_message(Ping(2), recipient, message_id=message_id)

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def deliveries_match_the_model(self) -> None:
        if self.mesh is None:
            return
        self.quiesce()
        delivered = Counter((agent_id, message_id) for agent_id, message_id, _ in self.log)
        assert delivered == self.expected

    @invariant()
    def every_key_lives_on_exactly_one_node(self) -> None:
        if self.mesh is None:
            return
        where: dict[AgentId, list[str]] = {}
        for node in self.nodes:
            for agent_id in node._agents.instances:
                where.setdefault(agent_id, []).append(node.name)
        duplicated = {a: names for a, names in where.items() if len(names) > 1}
        assert duplicated == {}
        for agent_id, names in where.items():
            owner = self.model.owner(agent_id)
            assert owner is not None
            assert names == [next(n.name for n in self.nodes if n.node_id == owner)]


MeshRouting.TestCase.settings = settings(MeshRouting.TestCase.settings, stateful_step_count=20)
TestMeshRouting = pytest.mark.slow(MeshRouting.TestCase)
