"""Agent lifecycle (DESIGN §2): agents are created lazily per AgentId by their factory inside
AgentInstantiationContext and cached; get(lazy=False) instantiates; state and metadata through the
runtime; try_get_underlying_agent_instance returns the object itself."""

# No ``from __future__ import annotations``: handlers are defined inside tests with annotations that
# name ``env.api`` objects, and AutoGen resolves them with get_type_hints().

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class Add:
    n: int


def counter_agent(env, created: list[Any] | None = None):
    """A RoutedAgent class of ``env.api`` with a saveable count; records its constructions."""
    api = env.api

    class Counter(api.RoutedAgent):
        def __init__(self) -> None:
            if created is not None:
                context = api.AgentInstantiationContext
                created.append(("init", context.current_runtime(), context.current_agent_id()))
            super().__init__("counts")
            self.count = 0

        @api.message_handler
        async def on_add(self, message: Add, ctx: api.MessageContext) -> int:
            self.count += message.n
            return self.count

        async def save_state(self) -> Mapping[str, Any]:
            return {"count": self.count}

        async def load_state(self, state: Mapping[str, Any]) -> None:
            self.count = state["count"]

    return Counter


async def test_agents_are_created_lazily_in_context_and_cached(env) -> None:
    api = env.api
    created: list[Any] = []
    Counter = counter_agent(env, created)

    def factory() -> Any:
        context = api.AgentInstantiationContext
        created.append(("factory", context.current_runtime(), context.current_agent_id()))
        return Counter()

    host = env.host("counter")
    await Counter.register(host, "counter", factory)
    await env.start()
    assert created == []  # nothing is created at registration
    caller = env.caller()
    assert await caller.send_message(Add(1), api.AgentId("counter", "k1")) == 1
    assert await caller.send_message(Add(2), api.AgentId("counter", "k1")) == 3  # the same object
    assert await caller.send_message(Add(5), api.AgentId("counter", "k2")) == 5
    # A publish reaches the same cached agent (direct-message subscription "counter:").
    await caller.publish_message(Add(1), api.TopicId("counter:", "k1"))
    await env.stop_when_idle()
    assert await env.host("counter").agent_save_state(api.AgentId("counter", "k1")) == {"count": 4}
    assert [(step, agent_id) for step, _, agent_id in created] == [
        ("factory", api.AgentId("counter", "k1")),
        ("init", api.AgentId("counter", "k1")),
        ("factory", api.AgentId("counter", "k2")),
        ("init", api.AgentId("counter", "k2")),
    ]
    assert all(runtime is host for _, runtime, _ in created)
    assert all(isinstance(agent_id, api.AgentId) for _, _, agent_id in created)


async def test_async_factory(env) -> None:
    api = env.api
    created: list[Any] = []
    Counter = counter_agent(env, created)

    async def factory() -> Any:
        return Counter()

    await Counter.register(env.host("counter"), "counter", factory)
    await env.start()
    assert await env.caller().send_message(Add(3), api.AgentId("counter", "k")) == 3
    assert await env.caller().send_message(Add(3), api.AgentId("counter", "k")) == 6
    assert [agent_id for _, _, agent_id in created] == [api.AgentId("counter", "k")]


async def test_instantiation_context_outside_a_factory_raises(env) -> None:
    api = env.api
    with pytest.raises(RuntimeError):
        api.AgentInstantiationContext.current_runtime()
    with pytest.raises(RuntimeError):
        api.AgentInstantiationContext.current_agent_id()
    assert api.AgentInstantiationContext.is_in_factory_call() is False


async def test_get_is_lazy_unless_told_otherwise(env) -> None:
    api = env.api
    created: list[Any] = []
    Counter = counter_agent(env, created)
    await Counter.register(env.host("counter"), "counter", Counter)
    await env.start()
    caller = env.caller()
    lazy = await caller.get("counter", "k1")
    assert (lazy.type, lazy.key) == ("counter", "k1")
    lazy_by_type = await caller.get(api.AgentType("counter"), "k2")
    assert (lazy_by_type.type, lazy_by_type.key) == ("counter", "k2")
    assert created == []
    eager = await caller.get("counter", "k3", lazy=False)
    assert (eager.type, eager.key) == ("counter", "k3")
    await caller.get(api.AgentId("counter", "k4"), lazy=False)
    default_key = await caller.get("counter", lazy=False)
    assert default_key.key == "default"
    assert [agent_id for _, _, agent_id in created] == [
        api.AgentId("counter", "k3"),
        api.AgentId("counter", "k4"),
        api.AgentId("counter", "default"),
    ]


async def test_agent_metadata_and_agent_state(env) -> None:
    api = env.api
    Counter = counter_agent(env)
    await Counter.register(env.host("counter"), "counter", Counter)
    await env.start()
    caller = env.caller()
    agent_id = api.AgentId("counter", "a")
    assert await caller.send_message(Add(2), agent_id) == 2
    assert await caller.agent_metadata(agent_id) == {"type": "counter", "key": "a", "description": "counts"}
    assert await caller.agent_save_state(agent_id) == {"count": 2}
    await caller.agent_load_state(agent_id, {"count": 40})
    assert await caller.send_message(Add(2), agent_id) == 42
    # Metadata of an agent not yet created creates it.
    assert (await caller.agent_metadata(api.AgentId("counter", "new")))["key"] == "new"


async def test_runtime_save_state_and_load_state(env) -> None:
    api = env.api
    created: list[Any] = []
    Counter = counter_agent(env, created)
    host = env.host("counter")
    await Counter.register(host, "counter", Counter)
    await env.start()
    caller = env.caller()
    a, b = api.AgentId("counter", "a"), api.AgentId("counter", "b")
    await caller.send_message(Add(2), a)
    await caller.send_message(Add(5), b)
    # save_state/load_state act on the runtime that hosts the agents (DESIGN §2 table).
    state = await host.save_state()
    assert state == {"counter/a": {"count": 2}, "counter/b": {"count": 5}}
    await caller.send_message(Add(100), a)
    await host.load_state(state)
    assert await caller.send_message(Add(0), a) == 2
    # An agent that does not exist yet is created to take its state; unknown types are ignored.
    await host.load_state({"counter/c": {"count": 7}, "unknown_type/x": {"count": 1}})
    assert await caller.send_message(Add(0), api.AgentId("counter", "c")) == 7
    assert [agent_id.key for _, _, agent_id in created] == ["a", "b", "c"]


async def test_try_get_underlying_agent_instance(env) -> None:
    api = env.api
    Counter = counter_agent(env)

    class Other(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("other")

    instance = Counter()
    host = env.host("counter")
    await Counter.register(host, "counter", Counter)
    await host.register_agent_instance(instance, api.AgentId("fixed", "one"))
    await env.start()
    await env.caller().send_message(Add(3), api.AgentId("counter", "a"))
    # Local only (DESIGN §2 table): ask the runtime that hosts the agent.
    agent = await host.try_get_underlying_agent_instance(api.AgentId("counter", "a"), Counter)
    assert isinstance(agent, Counter)
    assert agent.count == 3
    assert agent.id == api.AgentId("counter", "a")
    assert await host.try_get_underlying_agent_instance(api.AgentId("fixed", "one"), Counter) is instance
    # The default type is the Agent protocol; the agent is created if needed.
    fresh = await host.try_get_underlying_agent_instance(api.AgentId("counter", "fresh"))
    assert isinstance(fresh, Counter) and fresh.count == 0
    with pytest.raises(TypeError):
        await host.try_get_underlying_agent_instance(api.AgentId("counter", "a"), Other)
    with pytest.raises(LookupError):
        await host.try_get_underlying_agent_instance(api.AgentId("nobody", "a"))


class Boom(Exception):
    pass


async def test_factory_errors_reach_the_caller_and_creation_is_retried(env) -> None:
    api = env.api
    Counter = counter_agent(env)
    attempts: list[int] = []

    def flaky_factory() -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise Boom("first construction fails")
        return Counter()

    class Other(api.RoutedAgent):
        def __init__(self) -> None:
            super().__init__("not a Counter")

    await Counter.register(env.host("counter"), "counter", flaky_factory)
    # register() passes expected_class=Counter: a factory returning another class is refused.
    await Counter.register(env.host("wrong"), "wrong", Other)
    await env.start()
    caller = env.caller()
    with env.raises(Boom, "counter", match="first construction fails"):
        await caller.send_message(Add(1), api.AgentId("counter", "k"))
    assert await caller.send_message(Add(1), api.AgentId("counter", "k")) == 1
    assert len(attempts) == 2
    with pytest.raises(ValueError, match="wrong type"):
        await caller.send_message(Add(1), api.AgentId("wrong", "k"))


async def test_lookups_of_unknown_types_raise_lookup_error(env) -> None:
    api = env.api
    await env.start()
    with pytest.raises(LookupError):
        await env.caller().get("nobody", "k", lazy=False)
    with pytest.raises(LookupError):
        await env.caller().agent_metadata(api.AgentId("nobody", "k"))
    with pytest.raises(LookupError):
        await env.caller().agent_save_state(api.AgentId("nobody", "k"))


async def test_runtime_restarts_keep_registrations_and_agents(env) -> None:
    """A stopped runtime can be started again; registrations, subscriptions and live agents stay
    (DESIGN §2: "a stopped node can be started again ... its registrations and subscriptions are
    kept"). Restarted many times, so that a restart failing now and then is caught."""
    api = env.api
    Counter = counter_agent(env)
    await api.type_subscription("adds")(Counter).register(env.host("counter"), "counter", Counter)
    await env.start()
    restarts = 400
    for i in range(restarts):
        await env.caller().publish_message(Add(1), api.TopicId("adds", "k"))
        await env.idle()  # stop when idle, then start again
        assert await env.caller().send_message(Add(0), api.AgentId("counter", "k")) == i + 1
