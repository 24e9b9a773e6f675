"""agentmesh processes: one MeshNode each, default configuration, discovery by seed on loopback
(with ``secret_key_file`` in the config: CURVE on every link, one shared mesh key)."""

from __future__ import annotations

from typing import Any

import mesh

from ._child import Counter, drive_caller, drive_sender
from ._procs import CommandReader, say
from ._workload import Ack, Payload, payload

# A joining node waits at most this long to see its peers (a loaded 2-core machine is slow).
JOIN_TIMEOUT_S = 30.0


class Sink(mesh.RoutedAgent):
    def __init__(self, counter: Counter) -> None:
        super().__init__("counts payloads")
        self._counter = counter

    @mesh.message_handler
    async def on_payload(self, message: Payload, ctx: mesh.MessageContext) -> None:
        self._counter.hit()


class Echo(mesh.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("acknowledges payloads")

    @mesh.rpc
    async def on_payload(self, message: Payload, ctx: mesh.MessageContext) -> Ack:
        return Ack(message.seq)


def _node(config: dict[str, Any], name: str) -> mesh.MeshNode:
    seeds = [config["seed"]] if config.get("seed") else []
    return mesh.MeshNode(
        name=name,
        mesh=config["mesh"],
        discovery="none",
        seeds=seeds,
        secret_key_file=config.get("secret_key_file"),
    )


async def sink(config: dict[str, Any]) -> None:
    """Hosts ``types`` (each subscribed to ``topic``); each of them counts toward warm/total."""
    commands = CommandReader()
    types: list[str] = config["types"]
    counter = Counter(config["warm"] * len(types), config["total"] * len(types))
    node = _node(config, config.get("name", "sink"))
    for agent_type in types:
        await Sink.register(node, agent_type, lambda: Sink(counter))
        await node.add_subscription(mesh.TypeSubscription(config["topic"], agent_type))
    await node.start()
    if config.get("peers"):
        await node.wait_for_peers(config["peers"], timeout=JOIN_TIMEOUT_S)
    # Create the agents before the clock runs (as the in-process scenario does).
    for agent_type in types:
        await node.get(agent_type, config["source"], lazy=False)
    say("ready", address=node.address)
    counter.start()
    await commands.next("stop")
    await node.stop()


async def publisher(config: dict[str, Any]) -> None:
    """Publishes to ``topic`` once it sees ``peers`` peers."""
    commands = CommandReader()
    node = _node(config, "publisher")
    await node.start()
    await node.wait_for_peers(config["peers"], timeout=JOIN_TIMEOUT_S)
    topic = mesh.TopicId(config["topic"], config["source"])
    message = payload()
    publish = node.publish_message

    async def publish_one(seq: int) -> None:
        await publish(message, topic)

    await drive_sender(publish_one, commands)
    await commands.next("stop")
    await node.stop()


async def echo(config: dict[str, Any]) -> None:
    commands = CommandReader()
    node = _node(config, "echo")
    await Echo.register(node, "echo", Echo)
    await node.start()
    await node.get("echo", "default", lazy=False)
    say("ready", address=node.address)
    await commands.next("stop")
    await node.stop()


async def caller(config: dict[str, Any]) -> None:
    commands = CommandReader()
    node = _node(config, "caller")
    # This process hosts no agent: it must be told the reply's class to decode it.
    node.add_message_serializer(mesh.try_get_known_serializers_for_type(Ack))
    await node.start()
    await node.wait_for_peers(1, timeout=JOIN_TIMEOUT_S)
    recipient = mesh.AgentId("echo", "default")
    message = payload()
    send = node.send_message

    async def call(seq: int) -> None:
        await send(message, recipient)

    await drive_caller(call, commands)
    await commands.next("stop")
    await node.stop()


ROLES = {"sink": sink, "publisher": publisher, "echo": echo, "caller": caller}
