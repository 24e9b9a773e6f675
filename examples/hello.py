"""The seed "hello": two agents on one node greet each other five times over the default topic.

Run: python examples/hello.py
"""

import asyncio
from dataclasses import dataclass

from mesh import DefaultTopicId, MeshNode, MessageContext, RoutedAgent, default_subscription, message_handler


@dataclass
class MyMessage:
    content: str


@default_subscription
class MyAgent(RoutedAgent):
    def __init__(self, name: str) -> None:
        super().__init__("My agent")
        self._name = name
        self._counter = 0

    @message_handler
    async def my_message_handler(self, message: MyMessage, ctx: MessageContext) -> None:
        self._counter += 1
        if self._counter > 5:
            return
        content = f"{self._name}: Hello x {self._counter}"
        print(content)
        await self.publish_message(MyMessage(content=content), DefaultTopicId())


async def main() -> None:
    node = MeshNode(discovery="none")
    await MyAgent.register(node, "worker1", lambda: MyAgent("worker1"))
    await MyAgent.register(node, "worker2", lambda: MyAgent("worker2"))
    await node.start()
    await node.publish_message(MyMessage(content="Hello!"), DefaultTopicId())
    await node.stop_when_idle()


if __name__ == "__main__":
    asyncio.run(main())
