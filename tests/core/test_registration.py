"""Registration and subscriptions (DESIGN §2): register() adds the class subscriptions and the
direct-message subscription ``TypePrefixSubscription("<type>:", type)``; register_instance() adds
``TypeSubscription(key, type)``; class subscriptions are not inherited; duplicates are ValueErrors."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

from dataclasses import dataclass

import pytest


@dataclass
class Note:
    text: str


def recording_agent(env, seen, description: str = "records notes"):
    """A RoutedAgent class of ``env.api`` that records (type, key, text, topic type) per Note."""
    api = env.api

    class Recording(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__(description)

        @api.message_handler
        async def on_note(self, message: Note, ctx: api.MessageContext) -> None:
            topic = ctx.topic_id.type if ctx.topic_id is not None else None
            seen.add((self.id.type, self.id.key, message.text, topic))

    return Recording


async def test_register_adds_class_and_direct_message_subscriptions(env) -> None:
    api = env.api
    seen = env.recorder()
    Reader = api.type_subscription("news")(recording_agent(env, seen))
    agent_type = await Reader.register(env.host("reader"), "reader", Reader)
    assert agent_type.type == "reader"
    await env.start()
    caller = env.caller()
    await caller.publish_message(Note("class"), api.TopicId("news", "k1"))
    # The direct-message subscription is a prefix "reader:"; the topic source becomes the key.
    await caller.publish_message(Note("direct"), api.TopicId("reader:", "k2"))
    await caller.publish_message(Note("direct-suffix"), api.TopicId("reader:anything", "k3"))
    items = await seen.wait_for(3)
    assert sorted(items) == [
        ("reader", "k1", "class", "news"),
        ("reader", "k2", "direct", "reader:"),
        ("reader", "k3", "direct-suffix", "reader:anything"),
    ]


async def test_register_skip_flags(env) -> None:
    api = env.api
    seen = env.recorder()
    Reader = api.type_subscription("news")(recording_agent(env, seen))
    await Reader.register(
        env.host("quiet"), "quiet", Reader, skip_class_subscriptions=True, skip_direct_message_subscription=True
    )
    await env.start()
    await env.caller().publish_message(Note("class"), api.TopicId("news", "k1"))
    await env.caller().publish_message(Note("direct"), api.TopicId("quiet:", "k2"))
    # It still takes RPCs: only the subscriptions were skipped.
    assert await env.caller().send_message(Note("rpc"), api.AgentId("quiet", "k3")) is None
    await env.stop_when_idle()
    assert seen.items == [("quiet", "k3", "rpc", None)]


async def test_register_instance_adds_key_subscription(env) -> None:
    api = env.api
    seen = env.recorder()
    Instance = recording_agent(env, seen)
    alpha, beta = Instance(), Instance()
    host = env.host("inst")
    alpha_id = await alpha.register_instance(host, api.AgentId("inst", "alpha"))
    # A second instance of the type: its "inst:" prefix subscription already exists (no error).
    await beta.register_instance(host, api.AgentId("inst", "beta"))
    assert (alpha_id.type, alpha_id.key) == ("inst", "alpha")
    await env.start()
    caller = env.caller()
    # TypeSubscription(key, type): topic type "alpha"; the source must be the key to map to it.
    await caller.publish_message(Note("by-key"), api.TopicId("alpha", "alpha"))
    await caller.publish_message(Note("direct"), api.TopicId("inst:", "beta"))
    items = await seen.wait_for(2)
    assert sorted(items) == [("inst", "alpha", "by-key", "alpha"), ("inst", "beta", "direct", "inst:")]


async def test_register_instance_binds_the_agent_to_its_id(env) -> None:
    """The agent's own id is an id of its own api (DESIGN §2: normalised at the boundary), so an
    autogen_core agent can compare ``self.id`` with ``ctx.sender`` or its own AgentIds."""
    api = env.api
    seen = env.recorder()
    agent = recording_agent(env, seen)()
    await agent.register_instance(env.host("inst"), api.AgentId("inst", "alpha"))
    assert agent.id == api.AgentId("inst", "alpha")
    assert isinstance(agent.id, api.AgentId)


async def test_register_instance_skip_class_subscriptions_default(env) -> None:
    """register_instance() skips class subscriptions unless told otherwise."""
    api = env.api
    seen = env.recorder()
    Instance = api.type_subscription("news")(recording_agent(env, seen))
    host = env.host("inst")
    await Instance().register_instance(host, api.AgentId("inst", "a"))
    await Instance().register_instance(host, api.AgentId("inst", "b"), skip_class_subscriptions=False)
    await env.start()
    await env.caller().publish_message(Note("news"), api.TopicId("news", "b"))
    await env.stop_when_idle()
    assert seen.items == [("inst", "b", "news", "news")]


async def test_class_subscriptions_are_not_inherited(env) -> None:
    api = env.api
    seen = env.recorder()
    Parent = api.type_subscription("parent_topic")(recording_agent(env, seen))

    class Child(Parent):  # no decorator: no class subscriptions, but the handlers are inherited
        pass

    await Parent.register(env.host("parent"), "parent", Parent)
    await Child.register(env.host("child"), "child", Child)
    await env.start()
    await env.caller().publish_message(Note("topic"), api.TopicId("parent_topic", "k"))
    await env.caller().publish_message(Note("direct"), api.TopicId("child:", "k"))
    await env.stop_when_idle()
    assert sorted(seen.items) == [("child", "k", "direct", "child:"), ("parent", "k", "topic", "parent_topic")]


async def test_duplicate_type_registration_raises(env) -> None:
    seen = env.recorder()
    Agent = recording_agent(env, seen)
    host = env.host("dup")
    await Agent.register(host, "dup", Agent)
    with pytest.raises(ValueError):
        await Agent.register(host, "dup", Agent)
    with pytest.raises(ValueError):
        await host.register_factory("dup", Agent)


async def test_duplicate_instance_registration_raises(env) -> None:
    api = env.api
    Agent = recording_agent(env, env.recorder())
    host = env.host("inst")
    await host.register_agent_instance(Agent(), api.AgentId("inst", "a"))
    with pytest.raises(ValueError):
        await host.register_agent_instance(Agent(), api.AgentId("inst", "a"))


async def test_instances_and_factories_do_not_mix(env) -> None:
    api = env.api
    Agent = recording_agent(env, env.recorder())

    class OtherAgent(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("another class")

    host = env.host("inst")
    await host.register_agent_instance(Agent(), api.AgentId("inst", "a"))
    with pytest.raises(ValueError):
        await host.register_agent_instance(OtherAgent(), api.AgentId("inst", "b"))
    with pytest.raises(ValueError):
        await host.register_factory("inst", Agent)
    await Agent.register(env.host("fact"), "fact", Agent)
    with pytest.raises(ValueError):
        await env.host("fact").register_agent_instance(Agent(), api.AgentId("fact", "a"))


async def test_message_to_an_unregistered_instance_key_fails(env) -> None:
    """A type registered with instances has no factory: other keys cannot be created."""
    api = env.api
    seen = env.recorder()
    Agent = recording_agent(env, seen)
    await env.host("inst").register_agent_instance(Agent(), api.AgentId("inst", "a"))
    await env.start()
    assert await env.caller().send_message(Note("ok"), api.AgentId("inst", "a")) is None
    with pytest.raises(RuntimeError, match="not registered"):
        await env.caller().send_message(Note("lost"), api.AgentId("inst", "b"))
    assert seen.items == [("inst", "a", "ok", None)]


async def test_duplicate_subscription_by_id_raises(env) -> None:
    api = env.api
    host = env.host("a")
    await host.add_subscription(api.TypeSubscription("t1", "a", id="same"))
    with pytest.raises(ValueError):
        await host.add_subscription(api.TypeSubscription("t2", "b", id="same"))
    await host.add_subscription(api.TypePrefixSubscription("p1", "a", id="same-prefix"))
    with pytest.raises(ValueError):
        await host.add_subscription(api.TypePrefixSubscription("p2", "b", id="same-prefix"))


async def test_duplicate_subscription_by_agent_and_topic_raises(env) -> None:
    api = env.api
    host = env.host("a")
    await host.add_subscription(api.TypeSubscription("t", "a"))
    with pytest.raises(ValueError):
        await host.add_subscription(api.TypeSubscription("t", "a"))
    await host.add_subscription(api.TypePrefixSubscription("p", "a"))
    with pytest.raises(ValueError):
        await host.add_subscription(api.TypePrefixSubscription("p", "a"))
    # AutoGen's equality is per kind: a prefix subscription with the same strings is another one,
    # and so is one for another agent type.
    await host.add_subscription(api.TypePrefixSubscription("t", "a"))
    await host.add_subscription(api.TypeSubscription("t", "b"))


async def test_remove_unknown_subscription_raises(env) -> None:
    api = env.api
    host = env.host("a")
    with pytest.raises(ValueError):
        await host.remove_subscription("no-such-id")
    sub = api.TypeSubscription("t", "a")
    await host.add_subscription(sub)
    await host.remove_subscription(sub.id)
    with pytest.raises(ValueError):
        await host.remove_subscription(sub.id)


async def test_removed_subscription_stops_delivery_and_can_be_added_again(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = recording_agent(env, seen)
    host = env.host("sink")
    await Agent.register(host, "sink", Agent)
    sub = api.TypeSubscription("t", "sink")
    await host.add_subscription(sub)
    await host.remove_subscription(sub.id)
    await env.start()
    await env.caller().publish_message(Note("removed"), api.TopicId("t", "k"))
    # Messages to one agent start in send order: had "removed" been delivered, it would come first.
    # (SingleThreadedAgentRuntime resolves recipients when it dequeues a publish, so the RPC is also
    # the barrier before the subscription is added again.)
    await env.caller().send_message(Note("barrier"), api.AgentId("sink", "k"))
    assert seen.items == [("sink", "k", "barrier", None)]
    await host.add_subscription(api.TypeSubscription("t", "sink"))
    await env.caller().publish_message(Note("added"), api.TopicId("t", "k"))
    assert await seen.wait_for(2) == [("sink", "k", "barrier", None), ("sink", "k", "added", "t")]
