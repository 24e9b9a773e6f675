"""Publish (DESIGN §2): every matching subscription delivers, with no de-duplication; the sender is
skipped; all recipients share one message_id and the publisher's token; ``is_rpc`` is False and
``topic_id`` is set; no subscriber is a no-op. ``DefaultTopicId()`` takes the handling agent's key."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

import asyncio
from dataclasses import dataclass


@dataclass
class Note:
    text: str


def context_agent(env, seen):
    """A RoutedAgent class that records (type, key, text, ctx) for every Note it handles."""
    api = env.api

    class Recording(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("records contexts")

        @api.message_handler
        async def on_note(self, message: Note, ctx: api.MessageContext) -> None:
            seen.add((self.id.type, self.id.key, message.text, ctx))

    return Recording


async def test_every_matching_subscription_delivers_without_dedup(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = context_agent(env, seen)
    sink, other = env.host("sink"), env.host("other")
    await Agent.register(sink, "sink", Agent)
    await Agent.register(other, "other", Agent)
    # A Type and a TypePrefix subscription that both match map to the same AgentId: two deliveries.
    await sink.add_subscription(api.TypeSubscription("both", "sink"))
    await sink.add_subscription(api.TypePrefixSubscription("bo", "sink"))
    await other.add_subscription(api.TypeSubscription("both", "other"))
    await env.start()
    await env.caller().publish_message(Note("x"), api.TopicId("both", "k"))
    await seen.wait_for(3)
    await env.stop_when_idle()
    assert sorted((t, k, text) for t, k, text, _ in seen.items) == [
        ("other", "k", "x"),
        ("sink", "k", "x"),
        ("sink", "k", "x"),
    ]


async def test_publish_skips_the_sender(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = context_agent(env, seen)
    for agent_type in ("sink", "other"):
        await Agent.register(env.host(agent_type), agent_type, Agent)
        await env.host(agent_type).add_subscription(api.TypeSubscription("room", agent_type))
    await env.start()
    caller = env.caller()
    # sink/k is the sender: skipped; other/k receives.
    await caller.publish_message(Note("from-sink-k"), api.TopicId("room", "k"), sender=api.AgentId("sink", "k"))
    # Only the exact sender is skipped: sink/k receives a message sent by sink/other-key.
    await caller.publish_message(
        Note("from-sink-other"), api.TopicId("room", "k"), sender=api.AgentId("sink", "other-key")
    )
    await env.stop_when_idle()
    received = sorted((t, k, text, (ctx.sender.type, ctx.sender.key)) for t, k, text, ctx in seen.items)
    assert received == [
        ("other", "k", "from-sink-k", ("sink", "k")),
        ("other", "k", "from-sink-other", ("sink", "other-key")),
        ("sink", "k", "from-sink-other", ("sink", "other-key")),
    ]


async def test_agent_publishing_to_its_own_topic_is_skipped(env) -> None:
    api = env.api
    seen = env.recorder()

    class Speaker(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("publishes to the room")

        @api.rpc
        async def on_start(self, message: Note, ctx: api.MessageContext) -> None:
            await self.publish_message(Note("hello"), api.TopicId("room", self.id.key))

        @api.event
        async def on_note(self, message: Note, ctx: api.MessageContext) -> None:
            seen.add(("speaker", self.id.key, message.text))

    Listener = context_agent(env, seen)
    await Speaker.register(env.host("speaker"), "speaker", Speaker)
    await Listener.register(env.host("listener"), "listener", Listener)
    await env.host("speaker").add_subscription(api.TypeSubscription("room", "speaker"))
    await env.host("listener").add_subscription(api.TypeSubscription("room", "listener"))
    await env.start()
    await env.caller().send_message(Note("start"), api.AgentId("speaker", "k"))
    await env.stop_when_idle()
    assert len(seen.items) == 1
    agent_type, key, text, ctx = seen.items[0]
    assert (agent_type, key, text) == ("listener", "k", "hello")
    assert ctx.sender == api.AgentId("speaker", "k")


async def test_recipients_share_message_id_and_token(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = context_agent(env, seen)
    for agent_type in ("a", "b"):
        await Agent.register(env.host(agent_type), agent_type, Agent)
        await env.host(agent_type).add_subscription(api.TypeSubscription("t", agent_type))
    await env.start()
    token = api.CancellationToken()
    await env.caller().publish_message(Note("first"), api.TopicId("t", "k"), cancellation_token=token)
    first = await seen.wait_for(2)
    contexts = [ctx for _, _, _, ctx in first]
    assert contexts[0].message_id == contexts[1].message_id
    assert isinstance(contexts[0].message_id, str) and contexts[0].message_id
    remote_cancelled: list[asyncio.Event] = []
    for agent_type, _, _, ctx in first:
        if env.crosses(agent_type):
            # Across nodes a token object cannot be shared: the recipient's token is its node's,
            # and cancelling the publisher's token cancels it (DESIGN §2: the mesh carries the cancel).
            assert ctx.cancellation_token is not token
            assert not ctx.cancellation_token.is_cancelled()
            remote_cancelled.append(asyncio.Event())
            ctx.cancellation_token.add_callback(remote_cancelled[-1].set)
        else:
            assert ctx.cancellation_token is token
        assert ctx.is_rpc is False
        assert ctx.topic_id == api.TopicId("t", "k")
        assert ctx.sender is None
    if remote_cancelled:
        token.cancel()
        for event in remote_cancelled:
            await env.wait(event)

    await env.caller().publish_message(Note("second"), api.TopicId("t", "k"), message_id="given-id")
    items = await seen.wait_for(4)
    second = [ctx for _, _, text, ctx in items if text == "second"]
    assert [ctx.message_id for ctx in second] == ["given-id", "given-id"]
    # Without a token, the runtime makes one, still shared by all recipients on one node.
    if env.crosses("a") or env.crosses("b"):
        assert env.host("a") is env.host("b") or second[0].cancellation_token is not second[1].cancellation_token
    else:
        assert second[0].cancellation_token is second[1].cancellation_token
    assert second[0].cancellation_token is not token


async def test_publish_message_ids_differ_between_publishes(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = context_agent(env, seen)
    await Agent.register(env.host("a"), "a", Agent)
    await env.host("a").add_subscription(api.TypeSubscription("t", "a"))
    await env.start()
    for i in range(5):
        await env.caller().publish_message(Note(str(i)), api.TopicId("t", "k"))
    items = await seen.wait_for(5)
    assert len({ctx.message_id for _, _, _, ctx in items}) == 5


async def test_publish_without_subscribers_is_a_noop(env) -> None:
    api = env.api
    env.configure(ignore_unhandled_exceptions=False)
    seen = env.recorder()
    Agent = context_agent(env, seen)
    await Agent.register(env.host("a"), "a", Agent)
    await env.start()
    assert await env.caller().publish_message(Note("x"), api.TopicId("nobody", "k")) is None
    # Also for a topic whose type looks like an unregistered agent's direct-message prefix.
    assert await env.caller().publish_message(Note("x"), api.TopicId("ghost:", "k")) is None
    await env.stop_when_idle()  # no error surfaced
    assert seen.items == []


async def test_default_topic_id_outside_a_handler(env) -> None:
    api = env.api
    # (DefaultTopicId is a TopicId subclass and dataclass equality compares classes: use fields.)
    topic = api.DefaultTopicId()
    assert isinstance(topic, api.TopicId)
    assert (topic.type, topic.source) == ("default", "default")
    assert (api.DefaultTopicId("news").type, api.DefaultTopicId("news").source) == ("news", "default")
    assert api.DefaultTopicId("news", "given").source == "given"


async def test_default_topic_id_inside_handlers_takes_the_agent_key(env) -> None:
    api = env.api
    seen = env.recorder()

    @api.default_subscription
    class Echo(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("re-publishes to the replies topic")

        @api.event
        async def on_event(self, message: Note, ctx: api.MessageContext) -> None:
            await self.publish_message(Note("reply:" + message.text), api.DefaultTopicId("replies"))

        @api.rpc
        async def on_rpc(self, message: Note, ctx: api.MessageContext) -> str:
            topic = api.DefaultTopicId()
            return f"{topic.type}/{topic.source}"

    Collector = api.type_subscription("replies")(context_agent(env, seen))
    await Echo.register(env.host("echo"), "echo", Echo)
    await Collector.register(env.host("collector"), "collector", Collector)
    await env.start()
    caller = env.caller()
    assert await caller.send_message(Note("q"), api.AgentId("echo", "rpc-key")) == "default/rpc-key"
    # Outside a handler again: the handler's context did not leak into the caller.
    assert api.DefaultTopicId().source == "default"
    await caller.publish_message(Note("hi"), api.TopicId("default", "k7"))
    items = await seen.wait_for(1)
    agent_type, key, text, ctx = items[0]
    assert (agent_type, key, text) == ("collector", "k7", "reply:hi")
    assert (ctx.topic_id.type, ctx.topic_id.source) == ("replies", "k7")
    assert ctx.sender == api.AgentId("echo", "k7")
