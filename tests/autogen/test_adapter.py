"""The boundary between the mesh and unmodified autogen_core code (DESIGN §2, mesh.autogen)."""

from __future__ import annotations

from dataclasses import dataclass

import autogen_core
import autogen_core.exceptions
import pytest
from autogen_core import (
    AgentId,
    DefaultInterventionHandler,
    DropMessage,
    MessageContext,
    RoutedAgent,
    message_handler,
)

import mesh
from mesh import MeshNode
from mesh.autogen import check_compatible
from mesh.testing import LocalMesh


@dataclass
class Ping:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")

    @message_handler
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        assert isinstance(ctx, autogen_core.MessageContext)
        assert ctx.sender is None or isinstance(ctx.sender, autogen_core.AgentId)
        return message


def test_the_private_handler_context_variable_is_there() -> None:
    """DefaultTopicId() inside a handler reads autogen_core's private handler context variable:
    the runtime sets it, so the autogen extra pins the minor line where it exists."""
    var = check_compatible()
    assert var is autogen_core.MessageHandlerContext._MESSAGE_HANDLER_CONTEXT
    major, minor = (int(p) for p in autogen_core.__version__.split(".")[:2])
    assert (major, minor) == (0, 7)


def test_mesh_node_satisfies_the_autogen_core_runtime_protocol() -> None:
    assert isinstance(MeshNode(discovery="none"), autogen_core.AgentRuntime)


async def test_runtime_errors_are_autogen_core_errors_too() -> None:
    async with MeshNode(discovery="none") as node:
        with pytest.raises(autogen_core.exceptions.UndeliverableException) as unknown:
            await node.send_message(Ping(1), AgentId("nobody", "k"))
        assert isinstance(unknown.value, mesh.UnknownAgentTypeError)
        assert isinstance(unknown.value, LookupError)

        class Dropper(DefaultInterventionHandler):
            async def on_send(self, message: object, *, message_context: MessageContext, recipient: AgentId) -> object:
                return DropMessage

        dropping = MeshNode(discovery="none", intervention_handlers=[Dropper()])
        await Echo.register(dropping, "echo", Echo)
        async with dropping:
            with pytest.raises(autogen_core.exceptions.MessageDroppedException) as dropped:
                await dropping.send_message(Ping(1), AgentId("echo", "k"))
            assert isinstance(dropped.value, mesh.MessageDroppedException)


async def test_ids_come_back_in_the_callers_flavour_and_interventions_see_autogen_types() -> None:
    seen: list[object] = []

    class Watch(DefaultInterventionHandler):
        async def on_send(self, message: object, *, message_context: MessageContext, recipient: AgentId) -> object:
            seen.extend([type(message_context), type(recipient)])
            return message

    node = MeshNode(discovery="none", intervention_handlers=[Watch()])
    await Echo.register(node, "echo", Echo)
    async with node:
        got = await node.get(autogen_core.AgentType("echo"), "k", lazy=False)
        assert got == AgentId("echo", "k")  # an autogen_core AgentId compares equal to one
        assert type(got) is autogen_core.AgentId
        # A string, on a node that hosts autogen_core agents: autogen_core's flavour too.
        assert type(await node.get("echo", "k")) is autogen_core.AgentId
        assert await node.send_message(Ping(3), AgentId("echo", "k")) == Ping(3)
        instance = Echo()
        returned = await node.register_agent_instance(instance, AgentId("echo-instance", "one"))
        assert type(returned) is autogen_core.AgentId
        assert instance.id == AgentId("echo-instance", "one")
    assert seen == [autogen_core.MessageContext, autogen_core.AgentId]


class Money:
    """Not a dataclass nor a model: it crosses nodes only with the serializer below."""

    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents


class MoneySerializer:
    """An autogen_core MessageSerializer written by a user."""

    data_content_type = "text/plain"
    type_name = "Money"

    def serialize(self, message: Money) -> bytes:
        return str(message.cents).encode()

    def deserialize(self, payload: bytes) -> Money:
        return Money(int(payload))


class Bank(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("doubles money")

    @message_handler(strict=False)
    async def on_money(self, message: Money, ctx: MessageContext) -> Money:
        return Money(message.cents * 2)


async def test_user_serializers_in_autogen_form_carry_their_type_across_nodes() -> None:
    async with LocalMesh(2) as local:
        caller, host = local.nodes
        host.add_message_serializer(MoneySerializer())
        await host.register_factory("bank", Bank)
        with pytest.raises(mesh.SerializationError, match=r"no serializer for .*Money"):
            await caller.send_message(Money(5), AgentId("bank", "k"))
        caller.add_message_serializer([MoneySerializer()])
        assert await caller.send_message(Money(5), AgentId("bank", "k")) == Money(10)


async def test_register_and_get_answer_in_autogen_cores_flavour() -> None:
    """Code written for autogen_core builds ids from what register() returns and compares what
    get() returns with its own AgentId, as it does on SingleThreadedAgentRuntime."""
    async with MeshNode(discovery="none") as node:
        agent_type = await Echo.register(node, "echo", Echo)
        assert isinstance(agent_type, autogen_core.AgentType)
        assert agent_type == autogen_core.AgentType("echo")
        recipient = AgentId(agent_type, "default")
        assert await node.send_message(Ping(3), recipient) == Ping(3)
        assert await node.get("echo") == AgentId("echo", "default")
        assert await node.get(agent_type, "k") == AgentId("echo", "k")
        assert await node.get(recipient) == recipient


async def test_a_mesh_only_node_keeps_the_mesh_flavour() -> None:
    async with MeshNode(discovery="none") as node:
        assert await node.get("anything") == mesh.AgentId("anything", "default")
        assert type(await node.get("anything")) is mesh.AgentId
        assert mesh.AgentId(autogen_core.AgentType("t"), "k") == mesh.AgentId("t", "k")
