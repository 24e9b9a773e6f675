"""The strategies draw only what the runtime accepts, and what they draw routes across a real
three-node mesh exactly as the reference model says (Unicode names and empty keys included)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import find, given
from hypothesis import strategies as st

from mesh import AgentId, MessageContext, RoutedAgent, TopicId, TypePrefixSubscription, TypeSubscription, event, rpc
from mesh._ids import is_valid_agent_type, is_valid_topic_type
from mesh.testing import ModelSubscription, ReferenceModel, ThreadedMesh
from mesh.testing import strategies as mst


@dataclass
class Line:
    sku: str
    price: float


@dataclass
class Basket:
    owner: str
    total: float
    count: int
    line: Line
    tags: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    note: str | None = None


@given(mst.agent_types(), mst.topic_types(), mst.agent_keys(), mst.topic_sources())
def test_names_are_valid(agent_type: str, topic_type: str, key: str, source: str) -> None:
    assert is_valid_agent_type(agent_type)
    assert is_valid_topic_type(topic_type)
    assert isinstance(key, str) and isinstance(source, str)
    assert 1 <= len(agent_type) <= 20 and 1 <= len(topic_type) <= 20


@given(mst.agent_ids(), mst.topic_ids(), mst.agent_ids(types=st.just("shop"), keys=st.just("k")))
def test_ids(agent_id: AgentId, topic_id: TopicId, fixed: AgentId) -> None:
    assert isinstance(agent_id, AgentId) and isinstance(topic_id, TopicId)
    assert fixed == AgentId("shop", "k")


@given(mst.subscriptions(), mst.subscriptions(kinds=("prefix",), agent_types=st.just("a")))
def test_subscriptions(sub: TypeSubscription | TypePrefixSubscription, prefix: TypePrefixSubscription) -> None:
    model = ModelSubscription.of(sub)
    assert model.kind == ("type" if isinstance(sub, TypeSubscription) else "prefix")
    assert is_valid_agent_type(model.agent_type) and is_valid_topic_type(model.topic)
    assert isinstance(prefix, TypePrefixSubscription) and prefix.agent_type == "a"


def test_subscription_kinds_are_checked() -> None:
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        mst.subscriptions(kinds=("exact",))


@given(mst.messages(Basket))
def test_messages_have_finite_floats(basket: Basket) -> None:
    assert isinstance(basket, Basket) and isinstance(basket.line, Line)
    assert math.isfinite(basket.total) and math.isfinite(basket.line.price)


def test_messages_draw_fields_with_defaults_too() -> None:
    assert find(mst.messages(Basket), lambda b: len(b.tags) > 0 and b.note is not None).tags
    assert find(mst.messages(Basket, count=st.just(7)), lambda b: True).count == 7
    with pytest.raises(TypeError, match=r"Basket has no init fields named \['nope'\]"):
        mst.messages(Basket, nope=st.just(1))
    assert find(mst.messages(AgentId, type=st.just("a"), key=st.just("k")), lambda a: True) == AgentId("a", "k")


Log = list[tuple[AgentId, str, str]]


class Recorder(RoutedAgent):
    def __init__(self, log: Log, node_name: str) -> None:
        super().__init__("records")
        self._log = log
        self._node_name = node_name

    @event
    async def on_basket(self, message: Basket, ctx: MessageContext) -> None:
        self._log.append((self.id, ctx.message_id, self._node_name))

    @rpc
    async def echo(self, message: Basket, ctx: MessageContext) -> Basket:
        self._log.append((self.id, ctx.message_id, self._node_name))
        return message


def factory(log: Log, node_name: str) -> Callable[[], Recorder]:
    return lambda: Recorder(log, node_name)


@given(
    agent_type=mst.agent_types(),
    key=mst.agent_keys(),
    topic=mst.topic_types(),
    source=mst.topic_sources(),
    basket=mst.messages(Basket),
)
def test_drawn_values_route_across_three_nodes_as_the_model_says(
    agent_type: str, key: str, topic: str, source: str, basket: Basket
) -> None:
    model, log = ReferenceModel(), []
    with ThreadedMesh(3) as mesh:
        n0, n1, n2 = mesh.nodes
        for node in (n1, n2):
            mesh.call(Recorder.register, node, agent_type, factory(log, node.name))
            model.register_agent(node.node_id, agent_type, Recorder)
        subscription = TypeSubscription(topic, agent_type)
        mesh.call(n0.add_subscription, subscription)
        model.add_subscription(n0.node_id, subscription)

        mesh.call(n2.publish_message, basket, TopicId(topic, source), message_id="published")
        recipient = AgentId(agent_type, key)
        assert mesh.call(n0.send_message, basket, recipient, message_id="sent") == basket
        mesh.quiesce()

        expected = Counter({(a, "published"): n for a, n in model.recipients(topic, source).items()})
        expected[(recipient, "sent")] += 1
        assert Counter((a, m) for a, m, _ in log) == expected
        names = {n.node_id: n.name for n in mesh.nodes}
        assert all(ran_on == names[model.owner(a) or ""] for a, _, ran_on in log)
