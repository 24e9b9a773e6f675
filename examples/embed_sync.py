"""A plain (not async) script joins a mesh, publishes and makes an RPC: embed_sync.py [seed ...]"""

import sys

from mesh import AgentId, BackgroundNode, MessageContext, RoutedAgent, TopicId, rpc


class Echo(RoutedAgent):
    @rpc
    async def echo(self, message: str, ctx: MessageContext) -> str:
        return message.upper()


with BackgroundNode(discovery="none", seeds=sys.argv[1:]) as node:
    node.register(Echo, "echo", lambda: Echo("echoes"))
    node.publish_message("hello, mesh", TopicId("news", "embed_sync"))
    print(node.send_message("hi", AgentId("echo", "k1"), timeout=5.0))
