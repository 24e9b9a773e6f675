"""The reference model as an oracle: it converts real subscriptions, mirrors BaseAgent.register and
register_instance, and agrees with a real three-node mesh on errors, recipients and owners."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import autogen_core
import pytest

from mesh import (
    AgentId,
    DefaultSubscription,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    TypeSubscription,
    default_subscription,
    event,
    rpc,
    type_subscription,
)
from mesh.testing import LocalMesh, ModelSubscription, ReferenceModel, class_subscriptions

Log = list[tuple[AgentId, str, str]]


class Recording(RoutedAgent):
    def __init__(self, log: Log, node_name: str) -> None:
        super().__init__("records")
        self._log = log
        self._node_name = node_name

    @event
    async def on_text(self, message: str, ctx: MessageContext) -> None:
        self._log.append((self.id, ctx.message_id, self._node_name))

    @rpc
    async def where(self, message: int, ctx: MessageContext) -> str:
        return self._node_name


@type_subscription("orders")
@type_subscription("orders.eu")
class Shop(Recording):
    pass


@default_subscription
class Helper(Recording):
    pass


@type_subscription("orders")
class OtherShop(Recording):
    pass


def test_model_subscriptions_of_real_ones() -> None:
    assert ModelSubscription.of(TypeSubscription("t", "a", id="1")) == ModelSubscription("type", "t", "a", "1")
    assert ModelSubscription.of(TypePrefixSubscription("t.", "a", id="2")) == ModelSubscription(
        "prefix", "t.", "a", "2"
    )
    default = DefaultSubscription(agent_type="a")
    assert ModelSubscription.of(default) == ModelSubscription("type", "default", "a", default.id)
    theirs = autogen_core.TypePrefixSubscription("p", "a", id="3")
    assert ModelSubscription.of(theirs) == ModelSubscription("prefix", "p", "a", "3")
    with pytest.raises(TypeError, match="Type and TypePrefix subscriptions, not object"):
        ModelSubscription.of(object())


def test_class_subscriptions_are_built_for_the_registered_type() -> None:
    shop = sorted((s.topic_type, s.agent_type) for s in class_subscriptions(Shop, "store"))
    assert shop == [("orders", "store"), ("orders.eu", "store")]
    assert [(s.topic_type, s.agent_type) for s in class_subscriptions(Helper, "helper")] == [("default", "helper")]
    assert class_subscriptions(Recording, "plain") == []  # not inherited, as in AutoGen
    assert class_subscriptions(object, "plain") == []


def test_the_model_alone() -> None:
    model = ReferenceModel()
    model.register_agent("n1", "shop", Shop)
    model.register_agent("n2", "shop", Shop)
    # One subscription held by two nodes delivers once; a matching prefix one delivers again.
    assert model.recipients("orders", "alice") == Counter({AgentId("shop", "alice"): 1})
    model.add_subscription("n1", TypePrefixSubscription("ord", "shop"))
    assert model.recipients("orders", "alice") == Counter({AgentId("shop", "alice"): 2})
    assert model.recipients("orders", "alice", sender=AgentId("shop", "alice")) == Counter()
    assert model.recipients("shop:direct", "k") == Counter({AgentId("shop", "k"): 1})
    assert model.owner(AgentId("shop", "alice")) in {"n1", "n2"}
    assert model.owner(AgentId("nobody", "k")) is None
    model.remove_node("n1")
    assert model.owner(AgentId("shop", "alice")) == "n2"
    with pytest.raises(ValueError, match="Subscription does not exist"):
        model.remove_subscription("n2", "no-such-id")


def test_a_type_with_instances_only_is_reached_at_its_instances_keys_only() -> None:
    """register_instance(inst/k1) subscribes TypeSubscription("k1", "inst"): a publish to
    ("k1", "k1") reaches the instance; one to ("k1", "other") would need an agent inst/other,
    which no factory can make, so it reaches nobody (as on AutoGen's runtime)."""
    model = ReferenceModel()
    model.register_agent_instance("n1", AgentId("inst", "k1"))
    assert model.recipients("k1", "k1") == Counter({AgentId("inst", "k1"): 1})
    assert model.recipients("k1", "other") == Counter()
    model.register_agent("n2", "inst-factory", Shop)
    model.add_subscription("n2", TypeSubscription("k1", "inst-factory"))
    assert model.recipients("k1", "other") == Counter({AgentId("inst-factory", "other"): 1})


@pytest.fixture
async def mesh3() -> AsyncIterator[LocalMesh]:
    async with LocalMesh(3) as mesh:
        yield mesh


async def both(model_step: Any, mesh_step: Any) -> str:
    """Run a step on the model and on the mesh; both must succeed or both raise ValueError."""
    try:
        model_step()
    except ValueError:
        with pytest.raises(ValueError):
            await mesh_step()
        return "refused"
    await mesh_step()
    return "done"


async def test_registrations_succeed_and_fail_alike_on_the_model_and_the_mesh(mesh3: LocalMesh) -> None:
    model, log = ReferenceModel(), []
    n0, n1, n2 = mesh3.nodes

    def register(cls: type[Recording], node: Any, agent_type: str) -> Any:
        return both(
            lambda: model.register_agent(node.node_id, agent_type, cls),
            lambda: cls.register(node, agent_type, lambda: cls(log, node.name)),
        )

    def register_instance(node: Any, agent_id: AgentId) -> Any:
        return both(
            lambda: model.register_agent_instance(node.node_id, agent_id, Recording),
            lambda: Recording(log, node.name).register_instance(node, agent_id),
        )

    assert await register(Shop, n1, "shop") == "done"
    assert await register(Shop, n1, "shop") == "refused"  # twice on one node
    assert await register(Shop, n2, "shop") == "done"  # one type on two nodes
    assert await register(OtherShop, n0, "shop") == "refused"  # another class under that type
    assert await register(Helper, n0, "helper") == "done"
    assert await register_instance(n0, AgentId("single", "a")) == "done"
    assert await register_instance(n0, AgentId("single", "a")) == "refused"  # same id again
    assert await register_instance(n0, AgentId("single", "b")) == "done"
    assert await register_instance(n1, AgentId("shop", "x")) == "refused"  # a factory type
    assert await register(Shop, n2, "single") == "refused"  # an instance type
    sub = TypePrefixSubscription("orders", "helper")
    add = both(lambda: model.add_subscription(n1.node_id, sub), lambda: n1.add_subscription(sub))
    assert await add == "done"
    add = both(lambda: model.add_subscription(n1.node_id, sub), lambda: n1.add_subscription(sub))
    assert await add == "refused"

    # Publishes reach what the model says, on the nodes it says.
    expected: Counter[tuple[AgentId, str]] = Counter()
    topics = [("orders", "alice"), ("orders.eu", "bob"), ("default", "carol"), ("a", "a"), ("single:", "b")]
    for i, (topic, source) in enumerate(topics):
        message_id = f"m{i}"
        for agent_id, times in model.recipients(topic, source).items():
            expected[(agent_id, message_id)] += times
        await mesh3.nodes[i % 3].publish_message("hello", TopicId(topic, source), message_id=message_id)
    await mesh3.quiesce()
    assert Counter((agent_id, message_id) for agent_id, message_id, _ in log) == expected
    assert len(expected) >= 6
    names = {n.node_id: n.name for n in mesh3.nodes}
    assert all(node == names[model.owner(agent_id) or ""] for agent_id, _, node in log)
    for key in ["alice", "bob", "carol", "dave", "erin"]:
        shop = AgentId("shop", key)
        assert await n0.send_message(1, shop) == names[model.owner(shop) or ""]
