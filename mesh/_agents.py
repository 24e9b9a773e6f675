"""The agents one node hosts: registered factories and instances, and lazy creation."""

from __future__ import annotations

import asyncio
import inspect
import sys
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._agent import Agent, AgentRuntime
from ._context import AgentInstantiationContext
from ._errors import NotAccessibleError
from ._ids import AgentId
from ._serialization import qualified_name


@dataclass
class FactoryEntry:
    factory: Callable[..., Any]
    expected_class: type[Any] | None

    @property
    def fingerprint(self) -> str:
        return qualified_name(self.expected_class) if self.expected_class is not None else "*"


def _is_foreign(agent: Any) -> bool:
    """True for agents of autogen_core's classes (they get autogen_core contexts)."""
    return is_foreign_class(type(agent))


def is_foreign_class(cls: type[Any]) -> bool:
    """An autogen_core class, or a class derived from one (an agent written for autogen_core)."""
    return any(base.__module__.startswith("autogen_core") for base in cls.__mro__)


def is_autogen_object(value: Any) -> bool:
    """An autogen_core object itself (an id, type, topic or subscription from autogen_core code)."""
    return type(value).__module__.startswith("autogen_core")


class LocalAgents:
    """Factories, registered instances and live agents of one node."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._runtime = runtime
        self.factories: dict[str, FactoryEntry] = {}
        self.instance_types: dict[str, type[Any]] = {}
        self.instances: dict[AgentId, Any] = {}
        self.registered: set[AgentId] = set()
        self.foreign: set[AgentId] = set()
        self._creating: dict[AgentId, asyncio.Future[Any]] = {}

    @staticmethod
    def is_foreign_class(cls: type[Any]) -> bool:
        return is_foreign_class(cls)

    def hosts(self, agent_type: str) -> bool:
        return agent_type in self.factories or agent_type in self.instance_types

    def fingerprint(self, agent_type: str) -> str:
        entry = self.factories.get(agent_type)
        if entry is not None:
            return entry.fingerprint
        return qualified_name(self.instance_types[agent_type])

    def add_factory(self, agent_type: str, factory: Callable[..., Any], expected_class: type[Any] | None) -> None:
        if agent_type in self.factories or agent_type in self.instance_types:
            raise ValueError(f"Agent with type {agent_type} already exists.")
        self.factories[agent_type] = FactoryEntry(factory, expected_class)

    def check_instance(self, agent: Any, agent_id: AgentId) -> None:
        if agent_id in self.instances and agent_id in self.registered:
            raise ValueError(f"Agent with id {agent_id} already exists.")
        if agent_id.type in self.factories:
            raise ValueError("Agent factories and agent instances cannot be registered to the same type.")
        known = self.instance_types.get(agent_id.type)
        if known is not None and known is not type(agent):
            raise ValueError("Agent instances must be the same object type.")

    def add_instance(self, agent: Any, agent_id: AgentId) -> None:
        self.instance_types.setdefault(agent_id.type, type(agent))
        self.instances[agent_id] = agent
        self.registered.add(agent_id)
        if _is_foreign(agent):
            self.foreign.add(agent_id)

    async def get(self, agent_id: AgentId, prepare: Callable[[Any], Awaitable[None]] | None = None) -> Any:
        """The live agent for ``agent_id``, created by its factory on first use.

        ``prepare`` (used to load handed-over state) runs on a newly created agent before anyone
        else can use it, or on the live one.
        """
        agent = self.instances.get(agent_id)
        if agent is not None:
            if prepare is not None:
                await prepare(agent)
            return agent
        pending = self._creating.get(agent_id)
        if pending is not None:
            agent = await asyncio.shield(pending)
            if prepare is not None:
                await prepare(agent)
            return agent
        entry = self.factories.get(agent_id.type)
        if entry is None:
            if agent_id.type in self.instance_types:
                raise RuntimeError(
                    "Agent factory was invoked for an agent instance that was not registered. This is likely due "
                    "to the agent type being incorrectly subscribed to a topic. If this exception occurs when "
                    "publishing a message to the DefaultTopicId, then it is likely that `skip_class_subscriptions` "
                    "needs to be turned off when registering the agent."
                )
            raise LookupError(f"Agent with name {agent_id.type} not found.")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._creating[agent_id] = future
        try:
            agent = await self._create(entry, agent_id)
            if prepare is not None:
                await prepare(agent)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: later waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._creating[agent_id]
        self.instances[agent_id] = agent
        if _is_foreign(agent):
            self.foreign.add(agent_id)
        future.set_result(agent)
        return agent

    async def _create(self, entry: FactoryEntry, agent_id: AgentId) -> Any:
        foreign_ctx = None
        if "autogen_core" in sys.modules:
            from . import autogen as _autogen

            foreign_ctx = _autogen.instantiation_context(self._runtime, agent_id)
        with AgentInstantiationContext.populate_context((self._runtime, agent_id)):
            if foreign_ctx is not None:
                foreign_ctx.__enter__()
            try:
                params = len(inspect.signature(entry.factory).parameters)
                if params == 0:
                    agent = entry.factory()
                elif params == 2:
                    warnings.warn(
                        "Agent factories that take two arguments are deprecated. Use AgentInstantiationContext "
                        "instead. Two arg factories will be removed in a future version.",
                        stacklevel=2,
                    )
                    agent = entry.factory(self._runtime, agent_id)
                else:
                    raise ValueError("Agent factory must take 0 or 2 arguments.")
                if inspect.isawaitable(agent):
                    agent = await agent
            finally:
                if foreign_ctx is not None:
                    foreign_ctx.__exit__(None, None, None)
        expected = entry.expected_class
        if expected is not None and not issubclass(type(agent), expected):
            raise ValueError(
                f"Factory registered using the wrong type: expected {expected.__name__}, got {type(agent).__name__}"
            )
        return agent

    def get_local(self, agent_id: AgentId) -> Any:
        agent = self.instances.get(agent_id)
        if agent is None:
            raise NotAccessibleError(f"Agent {agent_id} is not instantiated on this node.")
        return agent

    def movable(self) -> list[AgentId]:
        """Live agents created by a factory (registered instances never move)."""
        return [a for a in self.instances if a not in self.registered]

    def drop(self, agent_id: AgentId) -> Any:
        self.foreign.discard(agent_id)
        return self.instances.pop(agent_id, None)

    def put_back(self, agent_id: AgentId, agent: Any) -> bool:
        """Keep a dropped agent after all (nobody took it over); False if a new one exists already."""
        if agent_id in self.instances or agent_id in self._creating:
            return False
        self.instances[agent_id] = agent
        if _is_foreign(agent):
            self.foreign.add(agent_id)
        return True


AgentFactory = Callable[[], Agent | Awaitable[Agent]]
