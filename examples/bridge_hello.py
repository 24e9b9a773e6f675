"""Bridging to an AutoGen host: a mesh agent and an agent on a standard AutoGen worker call each other.

Run: python examples/bridge_hello.py   (needs the grpc extra: pip install 'agentmesh-zmq[grpc]')

For brevity one process plays all three parts: a stock AutoGen gRPC host, a stock
GrpcWorkerAgentRuntime worker with an unmodified autogen_core agent, and a mesh node that runs the
bridge. In a real deployment they are separate processes or machines, and the bridge can run in
several mesh nodes at once (one is elected, the others stand by).
"""

import asyncio
from dataclasses import dataclass

import autogen_core
import grpc
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntime, GrpcWorkerAgentRuntimeHostServicer
from autogen_ext.runtimes.grpc.protos import agent_worker_pb2_grpc

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, rpc
from mesh.bridge import GrpcBridge


@dataclass
class Greeting:
    text: str


class MeshGreeter(RoutedAgent):
    """An agent on the mesh."""

    def __init__(self) -> None:
        super().__init__("greets back from the mesh")

    @rpc
    async def greet(self, message: Greeting, ctx: MessageContext) -> Greeting:
        return Greeting(f"the mesh greets back: {message.text!r}")


class AutoGenGreeter(autogen_core.RoutedAgent):
    """An unmodified autogen_core agent on a standard worker."""

    def __init__(self) -> None:
        super().__init__("greets back from AutoGen")

    @autogen_core.rpc
    async def greet(self, message: Greeting, ctx: autogen_core.MessageContext) -> Greeting:
        return Greeting(f"AutoGen greets back: {message.text!r}")


async def main() -> None:
    # The stock host (its servicer on our own server, to learn the port it bound).
    server = grpc.aio.server()
    agent_worker_pb2_grpc.add_AgentRpcServicer_to_server(GrpcWorkerAgentRuntimeHostServicer(), server)
    host_address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()

    # A stock worker with an AutoGen agent.
    worker = GrpcWorkerAgentRuntime(host_address=host_address)
    await worker.start()
    worker.add_message_serializer(autogen_core.try_get_known_serializers_for_type(Greeting))
    await AutoGenGreeter.register(worker, "autogen_greeter", AutoGenGreeter)

    # A mesh node with a mesh agent, and the bridge.
    node = MeshNode(discovery="none")
    await node.start()
    await MeshGreeter.register(node, "mesh_greeter", MeshGreeter)
    async with GrpcBridge(node, host_address) as bridge:
        await bridge.wait_connected()
        await bridge.sync()  # both sides now know each other's agent types
        reply = await node.send_message(Greeting("hello from the mesh"), AgentId("autogen_greeter", "default"))
        print(reply.text)
        mesh_greeter = autogen_core.AgentId("mesh_greeter", "default")
        reply = await worker.send_message(Greeting("hello from AutoGen"), mesh_greeter)
        print(reply.text)

    await node.stop()
    await worker.stop()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
