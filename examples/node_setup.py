"""The agents of one machine, run by `agentmesh node` (one command per machine): once the node has
started it calls setup(node), then serves until SIGTERM or SIGINT and leaves gracefully.

    agentmesh node examples/node_setup.py:setup --host 0.0.0.0 --name box-1
"""

from dataclasses import dataclass
from typing import Any

from mesh import MeshNode, MessageContext, RoutedAgent, rpc


@dataclass
class Greet:
    name: str


class Greeter(RoutedAgent):
    @rpc
    async def greet(self, message: Greet, ctx: MessageContext) -> str:
        node: Any = self.runtime
        return f"hello {message.name}, from {self.id} on {node.name}"


async def setup(node: MeshNode) -> None:
    await Greeter.register(node, "greeter", lambda: Greeter("says hello"))
