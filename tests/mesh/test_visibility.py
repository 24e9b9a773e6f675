"""Visibility (DESIGN §2): registration and subscription changes are acknowledged by every alive peer
before the call returns, so a publish made right afterwards from any joined node sees the change.

Three nodes in one event loop: agents live on ``b``; ``a`` and ``c`` publish with no wait between
the change returning and the publish. Every iteration uses fresh agent and topic types, so a change
that is late to arrive fails the iteration it belongs to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import anyio
import pytest

from mesh import (
    MeshNode,
    MessageContext,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    event,
    type_subscription,
)

ITERATIONS = 20
# Bound on a delivery that must happen (a loaded 2-core machine finishes it well inside).
DELIVERY_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 15.0


@dataclass
class Note:
    text: str


class Inbox:
    """What the agents of one iteration received, as (agent type, key, text); waitable."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []
        self._changed = anyio.Event()

    def add(self, item: tuple[str, str, str]) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, item: tuple[str, str, str], timeout_s: float = DELIVERY_TIMEOUT_S) -> None:
        with anyio.fail_after(timeout_s):
            while item not in self.items:  # bounded by fail_after
                await self._changed.wait()


class Recorder(RoutedAgent):
    def __init__(self, inbox: Inbox) -> None:
        super().__init__("records notes")
        self._inbox = inbox

    @event
    async def on_note(self, message: Note, ctx: MessageContext) -> None:
        self._inbox.add((self.id.type, self.id.key, message.text))


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[MeshNode, MeshNode, MeshNode]]:
    """Three joined nodes: ``a`` is the seed of ``b`` and ``c``."""
    started: list[MeshNode] = []
    try:
        a = MeshNode(name="a", discovery="none")
        started.append(a)
        await a.start()
        assert a.address is not None
        b = MeshNode(name="b", discovery="none", seeds=[a.address])
        started.append(b)
        await b.start()
        c = MeshNode(name="c", discovery="none", seeds=[a.address])
        started.append(c)
        await c.start()
        for node in started:
            await node.wait_for_peers(2, timeout=JOIN_TIMEOUT_S)
        yield a, b, c
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            for node in reversed(started):
                await node.close()


async def test_register_is_visible_to_a_publish_right_after(nodes: tuple[MeshNode, MeshNode, MeshNode]) -> None:
    a, b, c = nodes
    for i in range(ITERATIONS):
        inbox = Inbox()
        topic = f"reg-topic-{i}"
        agent_type = f"reg-{i}"
        # A fresh class per iteration: class subscriptions belong to the class they decorate.
        cls = type_subscription(topic)(type(f"Registered{i}", (Recorder,), {}))
        await cls.register(b, agent_type, partial(cls, inbox))
        await a.publish_message(Note("from a"), TopicId(topic, "k"))
        await c.publish_message(Note("from c"), TopicId(topic, "k"))
        await inbox.wait_for((agent_type, "k", "from a"))
        await inbox.wait_for((agent_type, "k", "from c"))


async def test_subscription_changes_are_visible_to_a_publish_right_after(
    nodes: tuple[MeshNode, MeshNode, MeshNode],
) -> None:
    a, b, c = nodes
    for i in range(ITERATIONS):
        inbox = Inbox()
        agent_type = f"sub-{i}"
        kept, dropped = f"kept-{i}", f"dropped-{i}"
        await Recorder.register(b, agent_type, partial(Recorder, inbox))

        await b.add_subscription(TypeSubscription(kept, agent_type))
        subscription = TypeSubscription(dropped, agent_type)
        await b.add_subscription(subscription)
        for sender, node in (("a", a), ("c", c)):
            await node.publish_message(Note(f"{dropped} from {sender}"), TopicId(dropped, "k"))
        await inbox.wait_for((agent_type, "k", f"{dropped} from a"))
        await inbox.wait_for((agent_type, "k", f"{dropped} from c"))

        await b.remove_subscription(subscription.id)
        for sender, node in (("a", a), ("c", c)):
            await node.publish_message(Note(f"late {dropped} from {sender}"), TopicId(dropped, "k"))
            # Same sender, same recipient: messages start in send order (DESIGN §2, Order). Once
            # this marker arrived, a delivery of the publish before it would have happened too.
            await node.publish_message(Note(f"marker from {sender}"), TopicId(kept, "k"))
        await inbox.wait_for((agent_type, "k", "marker from a"))
        await inbox.wait_for((agent_type, "k", "marker from c"))
        late = [item for item in inbox.items if item[2].startswith("late")]
        assert late == [], f"iteration {i}: a publish after remove_subscription() returned was delivered"
