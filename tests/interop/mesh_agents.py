"""Mesh agents of the interop tests, and a recorder of what they received."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from google.protobuf.wrappers_pb2 import StringValue
from interop.interop_messages import NEWS_TOPIC, Answer, Ask, Boom, News, Nothing

from mesh import MeshNode, MessageContext, RoutedAgent, event, rpc, type_subscription


class Received:
    """(kind, value) pairs the mesh agents received, in order, with a way to wait for one."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self._arrived = asyncio.Event()

    def add(self, kind: str, value: Any) -> None:
        self.items.append((kind, value))
        self._arrived.set()
        self._arrived = asyncio.Event()

    def count(self, kind: str, value: Any) -> int:
        return self.items.count((kind, value))

    async def expect(self, kind: str, value: Any, timeout: float = 20.0) -> None:
        try:
            async with asyncio.timeout(timeout):
                while (kind, value) not in self.items:  # bounded by the timeout
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"no {kind} {value!r} within {timeout} s; received {self.items}") from None


class MeshEcho(RoutedAgent):
    def __init__(self, received: Received) -> None:
        super().__init__("a mesh echo")
        self._received = received

    @rpc
    async def ask(self, message: Ask, ctx: MessageContext) -> Answer:
        self._received.add("ask", message.text)
        return Answer(f"mesh:{message.text}")

    @rpc
    async def boom(self, message: Boom, ctx: MessageContext) -> Answer:
        raise ValueError(f"boom from a mesh agent: {message.text}")

    @rpc
    async def nothing(self, message: Nothing, ctx: MessageContext) -> None:
        return None


@type_subscription(NEWS_TOPIC)
class MeshListener(RoutedAgent):
    def __init__(self, received: Received) -> None:
        super().__init__("a mesh listener")
        self._received = received

    @event
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        self._received.add("news", message.text)

    @event
    async def on_proto(self, message: StringValue, ctx: MessageContext) -> None:
        self._received.add("proto", message.value)


async def register_mesh_agents(node: MeshNode, received: Received) -> None:
    """``mesh_echo`` and ``mesh_listener`` (subscribed to "news") on ``node``."""
    await MeshEcho.register(node, "mesh_echo", factory(MeshEcho, received))
    await MeshListener.register(node, "mesh_listener", factory(MeshListener, received))


def factory(cls: Callable[[Received], RoutedAgent], received: Received) -> Callable[[], RoutedAgent]:
    def create() -> RoutedAgent:
        return cls(received)

    return create
