"""AutoGen's distributed "hello" on the mesh: the agent code is AutoGen's, unchanged; only the
runtime lines differ (MeshNode instead of GrpcWorkerAgentRuntimeHost and two workers).

Run: python examples/autogen_hello.py
"""

import asyncio
from dataclasses import dataclass

from autogen_core import DefaultTopicId, MessageContext, RoutedAgent, default_subscription, message_handler

from mesh import MeshNode
from mesh.testing import quiesce


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
    # The runtime lines: two nodes instead of a host and two workers.
    worker1 = MeshNode(discovery="none")
    await worker1.start()
    worker2 = MeshNode(discovery="none", seeds=[worker1.address])
    await worker2.start()

    await MyAgent.register(worker1, "worker1", lambda: MyAgent("worker1"))
    await MyAgent.register(worker2, "worker2", lambda: MyAgent("worker2"))

    await worker2.publish_message(MyMessage(content="Hello!"), DefaultTopicId())

    # Instead of sleeping: wait until both nodes are quiet (nothing queued, running or in flight).
    await quiesce([worker1, worker2])
    await worker2.stop()
    await worker1.stop()


if __name__ == "__main__":
    asyncio.run(main())
