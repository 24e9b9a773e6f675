"""A stock AutoGen ``GrpcWorkerAgentRuntime`` worker in its own process, driven by the interop tests.

Run: ``python worker_main.py --host HOST:PORT [--protobuf] [--no-agents] [--tls-ca CA [--tls-cert
CERT --tls-key KEY]]``. Unless ``--no-agents``,
it registers the standard agent types ``std_echo`` (RPCs: Ask -> Answer, StringValue -> Answer,
Boom raises, Nothing returns None, Hang never answers) and ``std_listener`` and ``std_listener2``
(subscribed to "news"; they print every News or StringValue they receive). Then it prints
``{"ready": pid}`` and reads commands, one JSON object per line on stdin, each run concurrently:

- ``{"op": "call", "id": ID, "type": T, "key": K, "text": S, "message": "ask" | "boom" | "nothing"}``:
  ``send_message(Ask(S), AgentId(T, K))`` (or Boom, Nothing); prints ``{"reply": ID, "text": ...}`` or
  ``{"reply": ID, "error": ...}``.
- ``{"op": "publish", "text": S, "proto": bool}``: publishes News(S) (or StringValue(S)) to "news"/"w".

Every message a standard agent receives is printed as ``{"event": kind, "text": ..., "agent": id}``.
It exits when its standard input closes or at SIGTERM.

The stock runtime (autogen-ext 0.7.5) only opens plaintext channels; with ``--tls-ca`` the channel
it opens is a TLS one instead (see :func:`use_tls`), and nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from autogen_core import (
    JSON_DATA_CONTENT_TYPE,
    PROTOBUF_DATA_CONTENT_TYPE,
    AgentId,
    MessageContext,
    RoutedAgent,
    TopicId,
    event,
    rpc,
    try_get_known_serializers_for_type,
    type_subscription,
)
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime
from google.protobuf.wrappers_pb2 import StringValue
from interop_messages import NEWS_TOPIC, Answer, Ask, Boom, Hang, News, Nothing


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


class StdEcho(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("a standard echo")

    @rpc
    async def ask(self, message: Ask, ctx: MessageContext) -> Answer:
        sender = str(ctx.sender) if ctx.sender is not None else None
        emit({"event": "ask", "text": message.text, "agent": str(self.id), "sender": sender})
        return Answer(f"std:{message.text}")

    @rpc
    async def ask_proto(self, message: StringValue, ctx: MessageContext) -> Answer:
        return Answer(f"std-proto:{message.value}")

    @rpc
    async def boom(self, message: Boom, ctx: MessageContext) -> Answer:
        raise ValueError(f"boom from a standard agent: {message.text}")

    @rpc
    async def nothing(self, message: Nothing, ctx: MessageContext) -> None:
        return None

    @rpc
    async def hang(self, message: Hang, ctx: MessageContext) -> Answer:
        emit({"event": "hang", "text": message.text, "agent": str(self.id)})
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@type_subscription(NEWS_TOPIC)
class StdListener(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("a standard listener")

    @event
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        emit({"event": "news", "text": message.text, "agent": str(self.id)})

    @event
    async def on_proto(self, message: StringValue, ctx: MessageContext) -> None:
        emit({"event": "proto", "text": message.value, "agent": str(self.id)})


def use_tls(ca: str, cert: str | None, key: str | None) -> None:
    """Make the channels this process opens TLS channels (as a TLS proxy beside the worker would)."""

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))

    def tls_channel(target: str, options: Any = None, compression: Any = None, interceptors: Any = None) -> Any:
        return grpc.aio.secure_channel(target, credentials, options, compression, interceptors)

    grpc.aio.insecure_channel = tls_channel


async def run_command(runtime: GrpcWorkerAgentRuntime, command: dict[str, Any]) -> None:
    if command["op"] == "call":
        kind = {"ask": Ask, "boom": Boom, "nothing": Nothing}[command.get("message", "ask")]
        try:
            reply = await runtime.send_message(kind(command["text"]), AgentId(command["type"], command["key"]))
            emit({"reply": command["id"], "text": reply.text if isinstance(reply, Answer) else repr(reply)})
        except Exception as exc:
            emit({"reply": command["id"], "error": f"{type(exc).__name__}: {exc}"})
    elif command["op"] == "publish":
        message: Any = StringValue(value=command["text"]) if command.get("proto") else News(command["text"])
        await runtime.publish_message(message, TopicId(NEWS_TOPIC, "w"))


async def serve(args: argparse.Namespace) -> None:
    fmt = PROTOBUF_DATA_CONTENT_TYPE if args.protobuf else JSON_DATA_CONTENT_TYPE
    runtime = GrpcWorkerAgentRuntime(host_address=args.host, payload_serialization_format=fmt)
    await runtime.start()
    for cls in (Ask, Answer, News, Boom, Nothing, Hang, StringValue):
        runtime.add_message_serializer(try_get_known_serializers_for_type(cls))
    if not args.no_agents:
        await StdEcho.register(runtime, "std_echo", StdEcho)
        await StdListener.register(runtime, "std_listener", StdListener)
        # A second type on the same topic: one publish from the mesh reaches both proxies, yet the
        # host must get it once (it delivers to each subscriber itself).
        await StdListener.register(runtime, "std_listener2", StdListener)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: os._exit(0))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    emit({"ready": os.getpid()})
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():  # ends at EOF: the test is done with us
        task = asyncio.create_task(run_command(runtime, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # The stock runtime has no bounded stop; the test is gone, so leave without waiting for it.
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--protobuf", action="store_true", help="publish with protobuf payloads")
    parser.add_argument("--no-agents", action="store_true", help="register no agent types (a pure caller)")
    parser.add_argument("--tls-ca", default=None, help="connect with TLS, verifying the host with this CA")
    parser.add_argument("--tls-cert", default=None, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", default=None, help="key of --tls-cert")
    args = parser.parse_args()
    if args.tls_ca:
        use_tls(args.tls_ca, args.tls_cert, args.tls_key)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="worker %(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
