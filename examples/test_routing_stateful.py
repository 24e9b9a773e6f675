"""A stateful hypothesis test of your own agents' routing over three nodes (run it with pytest).

``Shop`` agents take orders published on "orders" (one per customer: the source is the key), an
``Auditor`` sees every topic starting with "orders" once subscribed, a ``Ledger`` answers RPCs.
Hypothesis registers them on random nodes, publishes and sends from random nodes and stops a node
now and then; after every step the mesh is quiesced and who received what, on which node, is
compared with the reference model.
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mesh import (
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypePrefixSubscription,
    UnknownAgentTypeError,
    event,
    rpc,
    type_subscription,
)
from mesh.testing import ReferenceModel, ThreadedMesh
from mesh.testing import strategies as mst


@dataclass
class Order:
    item: str
    quantity: int


Log = list[tuple[AgentId, str, str]]  # (recipient, message id, name of the node it ran on)


class Recording(RoutedAgent):
    def __init__(self, log: Log, node_name: str) -> None:
        super().__init__("records what it receives")
        self._log = log
        self._node_name = node_name

    def record(self, ctx: MessageContext) -> None:
        self._log.append((self.id, ctx.message_id, self._node_name))


@type_subscription("orders")
class Shop(Recording):
    @event
    async def on_order(self, message: Order, ctx: MessageContext) -> None:
        self.record(ctx)


class Auditor(Recording):
    @event
    async def on_order(self, message: Order, ctx: MessageContext) -> None:
        self.record(ctx)


class Ledger(Recording):
    @rpc
    async def book(self, message: Order, ctx: MessageContext) -> int:
        self.record(ctx)
        return message.quantity


AGENTS: dict[str, type[Recording]] = {"shop": Shop, "auditor": Auditor, "ledger": Ledger}
# Every field drawn by hypothesis; quantities bounded as the shop bounds them (and the ledger's
# int reply travels as msgpack, whose integers are 64-bit).
ORDERS = mst.messages(Order, quantity=st.integers(min_value=1, max_value=1_000))


class ShopRouting(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mesh = ThreadedMesh(3).start()
        self.model = ReferenceModel()
        self.log: Log = []
        self.checked = 0  # log entries already checked for placement
        self.expected: Counter[tuple[AgentId, str]] = Counter()
        self.count = 0

    def teardown(self) -> None:
        self.mesh.close()

    def pick_node(self, data: st.DataObject) -> int:
        running = [i for i, node in enumerate(self.mesh.nodes) if node.running]
        return data.draw(st.sampled_from(running), label="node")

    def new_message_id(self) -> str:
        self.count += 1
        return f"m{self.count}"

    def mirror(self, model_step: Callable[[], None], mesh_step: Callable[..., Any], *args: Any) -> None:
        """Apply one step to the model and to the mesh: both succeed, or both raise ValueError."""
        try:
            model_step()
        except ValueError:  # e.g. this node has the type already
            with pytest.raises(ValueError):
                self.mesh.call(mesh_step, *args)
            return
        self.mesh.call(mesh_step, *args)

    @initialize(data=st.data())
    def register_every_type_once(self, data: st.DataObject) -> None:
        for agent_type in sorted(AGENTS):
            self.register(data, agent_type)

    @rule(data=st.data(), agent_type=st.sampled_from(sorted(AGENTS)))
    def register(self, data: st.DataObject, agent_type: str) -> None:
        node = self.mesh.nodes[self.pick_node(data)]
        cls, log = AGENTS[agent_type], self.log
        model_step = partial(self.model.register_agent, node.node_id, agent_type, cls)
        self.mirror(model_step, cls.register, node, agent_type, lambda: cls(log, node.name))

    @rule(data=st.data())
    def audit_orders(self, data: st.DataObject) -> None:
        node = self.mesh.nodes[self.pick_node(data)]
        subscription = TypePrefixSubscription("orders", "auditor")
        self.mirror(
            partial(self.model.add_subscription, node.node_id, subscription), node.add_subscription, subscription
        )

    @rule(
        data=st.data(),
        order=ORDERS,
        topic=st.sampled_from(["orders", "orders.eu", "refunds"]),
        customer=mst.topic_sources(max_size=6),
    )
    def publish(self, data: st.DataObject, order: Order, topic: str, customer: str) -> None:
        node = self.mesh.nodes[self.pick_node(data)]
        message_id = self.new_message_id()
        for agent_id, times in self.model.recipients(topic, customer).items():
            self.expected[(agent_id, message_id)] += times
        self.mesh.call(node.publish_message, order, TopicId(topic, customer), message_id=message_id)

    @rule(data=st.data(), order=ORDERS, account=mst.agent_keys(max_size=6))
    def book(self, data: st.DataObject, order: Order, account: str) -> None:
        node = self.mesh.nodes[self.pick_node(data)]
        ledger, message_id = AgentId("ledger", account), self.new_message_id()
        if self.model.owner(ledger) is None:
            with pytest.raises(UnknownAgentTypeError):
                self.mesh.call(node.send_message, order, ledger, message_id=message_id)
            return
        assert self.mesh.call(node.send_message, order, ledger, message_id=message_id) == order.quantity
        self.expected[(ledger, message_id)] += 1

    @precondition(lambda self: sum(node.running for node in self.mesh.nodes) > 2)
    @rule(data=st.data())
    def stop_a_node(self, data: st.DataObject) -> None:
        node = self.mesh.nodes[self.pick_node(data)]
        self.mesh.stop_node(node)  # a graceful leave: its agents move to their new owners
        self.model.remove_node(node.node_id)
        self.mesh.converge()

    @invariant()
    def deliveries_match_the_model(self) -> None:
        self.mesh.quiesce()
        assert Counter((agent_id, message_id) for agent_id, message_id, _ in self.log) == self.expected
        # Every new delivery ran on the node that owns its recipient.
        names = {node.node_id: node.name for node in self.mesh.nodes}
        for agent_id, _, ran_on in self.log[self.checked :]:
            assert ran_on == names[self.model.owner(agent_id) or ""], agent_id
        self.checked = len(self.log)


ShopRouting.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestShopRouting = ShopRouting.TestCase
