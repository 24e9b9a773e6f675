"""RoutedAgent and ClosureAgent (DESIGN §2: same semantics as autogen_core): dispatch by exact
message type, ``match=`` tried in alphabetical handler order, event vs rpc routing, unhandled
messages logged with ``None`` for an RPC; ClosureAgent.register_closure with subscriptions."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

import logging
from dataclasses import dataclass

import pytest


@dataclass
class Base:
    x: int


@dataclass
class Derived(Base):
    pass


@dataclass
class Job:
    kind: str


@dataclass
class Unhandled:
    value: int


async def test_dispatch_is_by_exact_type(env) -> None:
    api = env.api
    seen = env.recorder()

    class Exact(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("handles Base only")

        @api.message_handler
        async def on_base(self, message: Base, ctx: api.MessageContext) -> str:
            seen.add((type(message).__name__, ctx.is_rpc))
            return "base"

    await api.type_subscription("t")(Exact).register(env.host("exact"), "exact", Exact)
    await env.start()
    caller = env.caller()
    # A subclass instance of the handled type is not dispatched to it: unhandled, so None.
    assert await caller.send_message(Derived(1), api.AgentId("exact", "k")) is None
    await caller.publish_message(Derived(2), api.TopicId("t", "k"))
    assert await caller.send_message(Base(3), api.AgentId("exact", "k")) == "base"
    await env.stop_when_idle()
    assert seen.items == [("Base", True)]


async def test_match_is_tried_in_alphabetical_handler_order(env) -> None:
    api = env.api

    class Matcher(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("routes by match")

        # Defined first, but "b_general" sorts after "a_special" and both accept "special".
        @api.message_handler
        async def b_general(self, message: Job, ctx: api.MessageContext) -> str:
            return "general"

        @api.message_handler(match=lambda message, ctx: message.kind == "special")
        async def a_special(self, message: Job, ctx: api.MessageContext) -> str:
            return "special"

        @api.message_handler(match=lambda message, ctx: message.kind == "never")
        async def _0_never(self, message: Job, ctx: api.MessageContext) -> str:
            return "never"

    await Matcher.register(env.host("matcher"), "matcher", Matcher)
    await env.start()
    target = api.AgentId("matcher", "k")
    assert await env.caller().send_message(Job("special"), target) == "special"
    assert await env.caller().send_message(Job("other"), target) == "general"
    assert await env.caller().send_message(Job("never"), target) == "never"


async def test_event_and_rpc_handlers_are_routed_by_kind(env) -> None:
    api = env.api
    seen = env.recorder()

    class Both(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("event and rpc")

        # "a_event" sorts first: if routing ignored is_rpc, it would take the RPC too.
        @api.event
        async def a_event(self, message: Job, ctx: api.MessageContext) -> None:
            seen.add(("event", message.kind, ctx.is_rpc))

        @api.rpc
        async def b_rpc(self, message: Job, ctx: api.MessageContext) -> str:
            seen.add(("rpc", message.kind, ctx.is_rpc))
            return "rpc:" + message.kind

    await api.type_subscription("jobs")(Both).register(env.host("both"), "both", Both)
    await env.start()
    assert await env.caller().send_message(Job("direct"), api.AgentId("both", "k")) == "rpc:direct"
    await env.caller().publish_message(Job("published"), api.TopicId("jobs", "k"))
    await env.stop_when_idle()
    assert seen.items == [("rpc", "direct", True), ("event", "published", False)]


async def test_rpc_only_agent_ignores_events(env) -> None:
    api = env.api
    seen = env.recorder()

    class RpcOnly(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("rpc only")

        @api.rpc
        async def on_job(self, message: Job, ctx: api.MessageContext) -> str:
            seen.add(message.kind)
            return message.kind

    await api.type_subscription("jobs")(RpcOnly).register(env.host("rpc_only"), "rpc_only", RpcOnly)
    await env.start()
    await env.caller().publish_message(Job("published"), api.TopicId("jobs", "k"))
    assert await env.caller().send_message(Job("direct"), api.AgentId("rpc_only", "k")) == "direct"
    await env.stop_when_idle()
    assert seen.items == ["direct"]


async def test_unhandled_message_is_logged_and_rpc_returns_none(env, caplog: pytest.LogCaptureFixture) -> None:
    api = env.api

    class Narrow(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("handles jobs")

        @api.message_handler
        async def on_job(self, message: Job, ctx: api.MessageContext) -> str:
            return "job"

    await Narrow.register(env.host("narrow"), "narrow", Narrow)
    await env.start()
    caplog.set_level(logging.INFO)
    assert await env.caller().send_message(Unhandled(7), api.AgentId("narrow", "k")) is None
    assert any(record.getMessage().startswith("Unhandled message") for record in caplog.records)


async def test_closure_agent_with_subscriptions(env) -> None:
    api = env.api
    seen = env.recorder()

    async def closure(agent: api.ClosureContext, message: Job, ctx: api.MessageContext) -> str:
        topic = None if ctx.topic_id is None else (ctx.topic_id.type, ctx.topic_id.source)
        seen.add((agent.id.type, agent.id.key, message.kind, ctx.is_rpc, topic))
        return message.kind.upper()

    agent_type = await api.ClosureAgent.register_closure(
        env.host("collector"),
        "collector",
        closure,
        subscriptions=lambda: [api.TypeSubscription("results", "collector"), api.DefaultSubscription()],
    )
    assert agent_type.type == "collector"
    await env.start()
    caller = env.caller()
    await caller.publish_message(Job("a"), api.TopicId("results", "k1"))
    await caller.publish_message(Job("b"), api.TopicId("collector:", "k2"))  # direct-message subscription
    await caller.publish_message(Job("c"), api.DefaultTopicId())  # DefaultSubscription for "collector"
    assert await caller.send_message(Job("d"), api.AgentId("collector", "k4")) == "D"
    items = await seen.wait_for(4)
    assert sorted(items) == [
        ("collector", "default", "c", False, ("default", "default")),
        ("collector", "k1", "a", False, ("results", "k1")),
        ("collector", "k2", "b", False, ("collector:", "k2")),
        ("collector", "k4", "d", True, None),
    ]


async def test_closure_agent_options(env) -> None:
    api = env.api
    seen = env.recorder()

    async def closure(agent: api.ClosureContext, message: Job, ctx: api.MessageContext) -> str:
        seen.add(message.kind)
        return message.kind

    await api.ClosureAgent.register_closure(
        env.host("strict"), "strict", closure, unknown_type_policy="error", skip_direct_message_subscription=True
    )
    await env.start()
    with pytest.raises(env.agent_errors.CantHandleException):
        await env.caller().send_message(Unhandled(1), api.AgentId("strict", "k"))
    await env.caller().publish_message(Job("direct"), api.TopicId("strict:", "k"))
    assert await env.caller().send_message(Job("rpc"), api.AgentId("strict", "k")) == "rpc"
    await env.stop_when_idle()
    assert seen.items == ["rpc"]
