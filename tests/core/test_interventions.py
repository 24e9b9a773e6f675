"""Intervention handlers and ``ignore_unhandled_exceptions`` (DESIGN §2: a MeshNode with no peers is
a complete local runtime, "including intervention handlers"), constructed through env.configure()."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

from dataclasses import dataclass

import pytest

# Note: SingleThreadedAgentRuntime never marks a dropped message done in its queue, so after a drop
# its stop_when_idle() hangs (autogen_core 0.7.5). Tests with drops therefore prove "the handler
# never ran" with a later message that is not dropped, instead of an idle barrier.


@dataclass
class Echo:
    text: str


class Boom(Exception):
    pass


def echo_agent(env, seen):
    api = env.api

    class EchoAgent(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echoes")

        @api.message_handler
        async def on_echo(self, message: Echo, ctx: api.MessageContext) -> Echo:
            seen.add(message.text)
            return Echo(message.text)

        async def on_unhandled_message(self, message, ctx) -> None:
            # Anything else reaching the agent (e.g. a drop marker taken for a message) is recorded.
            seen.add(("unhandled", repr(message)))

    return EchoAgent


def _pair(agent_id):
    return None if agent_id is None else (agent_id.type, agent_id.key)


async def test_on_send_and_on_response_modify_messages(env) -> None:
    api = env.api
    calls: list[tuple[object, ...]] = []

    class Shout(api.DefaultInterventionHandler):
        async def on_send(self, message, *, message_context, recipient):
            calls.append(("send", _pair(recipient), _pair(message_context.sender), message_context.is_rpc))
            return Echo(message.text.upper())

        async def on_response(self, message, *, sender, recipient):
            calls.append(("response", _pair(sender), _pair(recipient)))
            return Echo(message.text + "!")

    env.configure(intervention_handlers=[Shout()])
    seen = env.recorder()
    Agent = echo_agent(env, seen)
    await Agent.register(env.host("echo"), "echo", Agent)
    await env.start()
    assert await env.caller().send_message(Echo("hi"), api.AgentId("echo", "k")) == Echo("HI!")
    assert seen.items == ["HI"]
    assert calls == [("send", ("echo", "k"), None, True), ("response", ("echo", "k"), None)]


async def test_drop_on_send_raises_message_dropped(env) -> None:
    api = env.api

    class DropSome(api.DefaultInterventionHandler):
        async def on_send(self, message, *, message_context, recipient):
            return api.DropMessage if message.text == "drop" else message

    env.configure(intervention_handlers=[DropSome()])
    seen = env.recorder()
    Agent = echo_agent(env, seen)
    await Agent.register(env.host("echo"), "echo", Agent)
    await env.start()
    with pytest.raises(env.runtime_errors.MessageDroppedException):
        await env.caller().send_message(Echo("drop"), api.AgentId("echo", "k"))
    assert await env.caller().send_message(Echo("keep"), api.AgentId("echo", "k")) == Echo("keep")
    assert seen.items == ["keep"]


async def test_drop_on_publish_drops(env) -> None:
    api = env.api
    contexts: list[tuple[object, ...]] = []

    class DropSome(api.DefaultInterventionHandler):
        async def on_publish(self, message, *, message_context):
            topic = message_context.topic_id
            contexts.append((message.text, topic.type, topic.source, message_context.is_rpc))
            return api.DropMessage if message.text == "drop" else message

    env.configure(intervention_handlers=[DropSome()])
    seen = env.recorder()
    Agent = api.type_subscription("t")(echo_agent(env, seen))
    await Agent.register(env.host("echo"), "echo", Agent)
    await env.start()
    await env.caller().publish_message(Echo("drop"), api.TopicId("t", "k"))
    await env.caller().publish_message(Echo("keep"), api.TopicId("t", "k"))
    # Deliveries to one agent start in publish order: had "drop" been delivered, it would be first.
    assert await seen.wait_for(1) == ["keep"]
    assert contexts == [("drop", "t", "k", False), ("keep", "t", "k", False)]


async def test_drop_on_response_raises_message_dropped(env) -> None:
    api = env.api

    class DropReplies(api.DefaultInterventionHandler):
        async def on_response(self, message, *, sender, recipient):
            return api.DropMessage

    env.configure(intervention_handlers=[DropReplies()])
    seen = env.recorder()
    Agent = echo_agent(env, seen)
    await Agent.register(env.host("echo"), "echo", Agent)
    await env.start()
    with pytest.raises(env.runtime_errors.MessageDroppedException):
        await env.caller().send_message(Echo("x"), api.AgentId("echo", "k"))
    assert seen.items == ["x"]  # the handler ran; only its reply was dropped


def raising_agent(env, seen):
    api = env.api

    class Raiser(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("raises")

        @api.message_handler
        async def on_echo(self, message: Echo, ctx: api.MessageContext) -> Echo:
            seen.add(message.text)
            if message.text == "boom":
                raise Boom(message.text)
            return Echo(message.text)

    return Raiser


async def test_publish_handler_exception_is_raised_by_stop_when_idle(env) -> None:
    api = env.api
    env.configure(ignore_unhandled_exceptions=False)
    seen = env.recorder()
    Agent = api.type_subscription("t")(raising_agent(env, seen))
    await Agent.register(env.host("raiser"), "raiser", Agent)
    await env.start()
    await env.caller().publish_message(Echo("boom"), api.TopicId("t", "k"))
    with pytest.raises(Boom, match=r"^boom$"):
        await env.stop_when_idle()
    assert seen.items == ["boom"]


async def test_publish_handler_exception_is_ignored_by_default(env) -> None:
    api = env.api
    seen = env.recorder()
    Agent = api.type_subscription("t")(raising_agent(env, seen))
    await Agent.register(env.host("raiser"), "raiser", Agent)
    await env.start()
    await env.caller().publish_message(Echo("boom"), api.TopicId("t", "k"))
    await seen.wait_for(1)
    # The runtime keeps serving.
    assert await env.caller().send_message(Echo("ok"), api.AgentId("raiser", "k")) == Echo("ok")
    await env.stop_when_idle()
    assert seen.items == ["boom", "ok"]


async def test_rpc_handler_exception_is_not_a_background_exception(env) -> None:
    api = env.api
    env.configure(ignore_unhandled_exceptions=False)
    seen = env.recorder()
    Agent = raising_agent(env, seen)
    await Agent.register(env.host("raiser"), "raiser", Agent)
    await env.start()
    with env.raises(Boom, "raiser"):
        await env.caller().send_message(Echo("boom"), api.AgentId("raiser", "k"))
    await env.stop_when_idle()  # the caller got it; nothing is raised again here
    assert seen.items == ["boom"]
