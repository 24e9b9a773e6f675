"""AutoGen's distributed runtime: a GrpcWorkerAgentRuntimeHost and GrpcWorkerAgentRuntime workers.

The host's servicer is mounted on our own ``grpc.aio.server`` bound to port 0, so the bound port
can be read back (``GrpcWorkerAgentRuntimeHost`` takes a fixed address); everything else is
autogen-ext's code as shipped.
"""

from __future__ import annotations

import logging
from typing import Any

import autogen_core
import grpc
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime
from autogen_ext.runtimes.grpc._worker_runtime_host_servicer import GrpcWorkerAgentRuntimeHostServicer
from autogen_ext.runtimes.grpc.protos import agent_worker_pb2_grpc

from ._child import Counter, drive_caller, drive_sender
from ._procs import CommandReader, say
from ._workload import Ack, Payload, payload


def _quiet() -> None:
    # As a user would run it: warnings and errors only (AutoGen still formats its info lines).
    logging.basicConfig(level=logging.WARNING)
    for name in ("autogen_core", "autogen_ext", "grpc"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Sink(autogen_core.RoutedAgent):
    def __init__(self, counter: Counter) -> None:
        super().__init__("counts payloads")
        self._counter = counter

    @autogen_core.message_handler
    async def on_payload(self, message: Payload, ctx: autogen_core.MessageContext) -> None:
        self._counter.hit()


class Echo(autogen_core.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("acknowledges payloads")

    @autogen_core.rpc
    async def on_payload(self, message: Payload, ctx: autogen_core.MessageContext) -> Ack:
        return Ack(message.seq)


async def host(config: dict[str, Any]) -> None:
    _quiet()
    commands = CommandReader()
    server = grpc.aio.server()
    agent_worker_pb2_grpc.add_AgentRpcServicer_to_server(GrpcWorkerAgentRuntimeHostServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    say("ready", address=f"127.0.0.1:{port}")
    await commands.next("stop")
    await server.stop(grace=None)


async def _worker(config: dict[str, Any]) -> GrpcWorkerAgentRuntime:
    _quiet()
    runtime = GrpcWorkerAgentRuntime(host_address=config["host"])
    runtime.add_message_serializer(autogen_core.try_get_known_serializers_for_type(Payload))
    runtime.add_message_serializer(autogen_core.try_get_known_serializers_for_type(Ack))
    await runtime.start()
    return runtime


async def sink(config: dict[str, Any]) -> None:
    """A worker hosting ``types`` (each subscribed to ``topic``); each counts toward warm/total."""
    commands = CommandReader()
    types: list[str] = config["types"]
    counter = Counter(config["warm"] * len(types), config["total"] * len(types))
    runtime = await _worker(config)
    for agent_type in types:
        await Sink.register(runtime, agent_type, lambda: Sink(counter))
        await runtime.add_subscription(autogen_core.TypeSubscription(config["topic"], agent_type))
    for agent_type in types:
        await runtime.get(agent_type, config["source"], lazy=False)
    say("ready")
    counter.start()
    await commands.next("stop")
    await runtime.stop()


async def publisher(config: dict[str, Any]) -> None:
    commands = CommandReader()
    runtime = await _worker(config)
    topic = autogen_core.TopicId(config["topic"], config["source"])
    message = payload()
    publish = runtime.publish_message

    async def publish_one(seq: int) -> None:
        await publish(message, topic)

    await drive_sender(publish_one, commands)
    await commands.next("stop")
    await runtime.stop()


async def echo(config: dict[str, Any]) -> None:
    commands = CommandReader()
    runtime = await _worker(config)
    await Echo.register(runtime, "echo", Echo)
    await runtime.get("echo", "default", lazy=False)
    say("ready")
    await commands.next("stop")
    await runtime.stop()


async def caller(config: dict[str, Any]) -> None:
    commands = CommandReader()
    runtime = await _worker(config)
    recipient = autogen_core.AgentId("echo", "default")
    message = payload()
    send = runtime.send_message

    async def call(seq: int) -> None:
        await send(message, recipient)

    await drive_caller(call, commands)
    await commands.next("stop")
    await runtime.stop()


ROLES = {"host": host, "sink": sink, "publisher": publisher, "echo": echo, "caller": caller}
