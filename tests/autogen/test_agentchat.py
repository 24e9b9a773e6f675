"""An AgentChat team on the mesh: RoundRobinGroupChat of two AssistantAgents driven by replayed
model answers (no network, no key), first on one MeshNode, then on a node with peers, where a
team agent's tool calls an agent on another node and an agent on a third node follows the team's
conversation on its output topic."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_agentchat.teams._group_chat._events import GroupChatMessage, GroupChatTermination
from autogen_core import AgentId, FunctionCall, MessageContext, RoutedAgent, TypeSubscription, message_handler
from autogen_core.models import CreateResult, ModelInfo, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

from mesh import MeshNode
from mesh.testing import LocalMesh

TOOLS_MODEL = ModelInfo(
    vision=False, function_calling=True, json_output=False, family="unknown", structured_output=False
)


def texts(messages: Any) -> list[tuple[str, str]]:
    return [(m.source, str(m.content)) for m in messages]


async def test_a_team_runs_on_one_node() -> None:
    async with MeshNode(discovery="none") as node:
        alice = AssistantAgent("alice", model_client=ReplayChatCompletionClient(["hi bob", "how are you?"]))
        bob = AssistantAgent("bob", model_client=ReplayChatCompletionClient(["hi alice", "fine"]))
        team = RoundRobinGroupChat([alice, bob], termination_condition=MaxMessageTermination(5), runtime=node)
        result = await asyncio.wait_for(team.run(task="start"), 30)
    assert texts(result.messages) == [
        ("user", "start"),
        ("alice", "hi bob"),
        ("bob", "hi alice"),
        ("alice", "how are you?"),
        ("bob", "fine"),
    ]


@dataclass
class Lookup:
    city: str


class Weather(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("knows the weather")

    @message_handler
    async def on_lookup(self, message: Lookup, ctx: MessageContext) -> str:
        return f"sunny in {message.city}"


class Follower(RoutedAgent):
    """Follows a team's conversation from another node."""

    def __init__(self, seen: list[tuple[str, str]], finished: asyncio.Event) -> None:
        super().__init__("follows the team")
        self._seen = seen
        self._finished = finished

    @message_handler
    async def on_group_message(self, message: GroupChatMessage, ctx: MessageContext) -> None:
        self._seen.append((message.message.source, str(message.message.to_text())))

    @message_handler
    async def on_end(self, message: GroupChatTermination, ctx: MessageContext) -> None:
        self._finished.set()


async def test_a_team_on_a_node_with_peers_calls_and_is_followed_across_nodes() -> None:
    seen: list[tuple[str, str]] = []
    finished = asyncio.Event()
    async with LocalMesh(3) as local:
        team_node, follower_node, weather_node = local.nodes
        await Weather.register(weather_node, "weather", Weather)

        async def get_weather(city: str) -> str:
            """The weather of a city, from the weather agent wherever it runs on the mesh."""
            return str(await team_node.send_message(Lookup(city), AgentId("weather", "default")))

        call = CreateResult(
            finish_reason="function_calls",
            content=[FunctionCall(id="1", name="get_weather", arguments='{"city": "Paris"}')],
            usage=RequestUsage(prompt_tokens=0, completion_tokens=0),
            cached=False,
        )
        alice = AssistantAgent(
            "alice",
            model_client=ReplayChatCompletionClient([call, "what a day"], model_info=TOOLS_MODEL),
            tools=[get_weather],
        )
        bob = AssistantAgent("bob", model_client=ReplayChatCompletionClient(["lovely"]))
        team = RoundRobinGroupChat([alice, bob], termination_condition=MaxMessageTermination(3), runtime=team_node)
        # The team's topics exist once it is initialised; the follower subscribes to its output.
        await team.reset()
        await Follower.register(follower_node, "follower", lambda: Follower(seen, finished))
        await follower_node.add_subscription(TypeSubscription(team._output_topic_type, "follower"))

        result = await asyncio.wait_for(team.run(task="weather in Paris?"), 30)
        await asyncio.wait_for(finished.wait(), 10)

    conversation = texts(result.messages)
    assert conversation[0] == ("user", "weather in Paris?")
    assert ("alice", "sunny in Paris") in conversation  # the tool's answer, from the weather node
    assert conversation[-1] == ("bob", "lovely")
    # The follower on another node saw the same messages, in the same order, decoded from the wire.
    followed = [(source, text) for source, text in seen if source != "user"]
    assert [s for s, _ in followed] == [m.source for m in result.messages[1:]]
    assert any("sunny in Paris" in text for _, text in followed)
