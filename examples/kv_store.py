"""A key-value agent on one node, called from another: replies and errors cross the wire.

Builtin errors (KeyError, ZeroDivisionError) and error types the caller's node registers come back
as themselves; any other error type as RemoteAgentError, with its type name, message and the remote
traceback. (The two nodes share this process; across processes and machines it is the same.)

Run: python examples/kv_store.py
"""

import asyncio
from dataclasses import dataclass

from mesh import AgentId, MeshNode, MessageContext, RemoteAgentError, RoutedAgent, rpc


class ReadOnlyError(Exception):
    """Registered with the caller's node: rebuilt there as itself."""


class StoreFullError(Exception):
    """Not registered: arrives as RemoteAgentError."""


@dataclass
class Put:
    key: str
    value: float


@dataclass
class Get:
    key: str


@dataclass
class Ratio:
    numerator: str
    denominator: str


class Store(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("a key-value store")
        self._data: dict[str, float] = {"pi": 3.14159}

    @rpc
    async def put(self, message: Put, ctx: MessageContext) -> None:
        if message.key == "pi":
            raise ReadOnlyError(f"{message.key} is read-only")
        if message.key not in self._data and len(self._data) >= 3:
            raise StoreFullError(f"no room for {message.key}: the store holds {len(self._data)} keys")
        self._data[message.key] = message.value

    @rpc
    async def get(self, message: Get, ctx: MessageContext) -> float:
        return self._data[message.key]  # KeyError for a key it does not hold

    @rpc
    async def ratio(self, message: Ratio, ctx: MessageContext) -> float:
        return self._data[message.numerator] / self._data[message.denominator]  # ZeroDivisionError


async def main() -> None:
    async with MeshNode(name="server", discovery="none") as server:
        await Store.register(server, "store", Store)
        async with MeshNode(name="client", discovery="none", seeds=[server.address]) as client:
            client.register_exception_type(ReadOnlyError)
            store = AgentId("store", "shop-1")
            await client.send_message(Put("apples", 6.0), store)
            await client.send_message(Put("pears", 0.0), store)
            print("apples =", await client.send_message(Get("apples"), store))
            print("apples / pi =", round(await client.send_message(Ratio("apples", "pi"), store), 3))
            for request in (Get("plums"), Ratio("apples", "pears"), Put("pi", 3.0), Put("plums", 1.0)):
                try:
                    await client.send_message(request, store)
                except (KeyError, ZeroDivisionError, ReadOnlyError) as exc:
                    print(f"{request} raised {type(exc).__name__}: {exc}")
                except RemoteAgentError as exc:
                    print(f"{request} raised RemoteAgentError ({exc.type_name}): {exc.remote_message}")


if __name__ == "__main__":
    asyncio.run(main())
