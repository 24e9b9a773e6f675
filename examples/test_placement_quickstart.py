import pytest

from mesh import AgentId, MessageContext, RoutedAgent, rpc
from mesh.testing import ReferenceModel


class Shop(RoutedAgent):
    @rpc
    async def order(self, message: str, ctx: MessageContext) -> str:
        return self.runtime.node_id


@pytest.mark.anyio
async def test_the_model_predicts_which_node_serves_a_customer(agentmesh_mesh) -> None:
    mesh, model, alice = await agentmesh_mesh(3), ReferenceModel(), AgentId("shop", "alice")
    for node in mesh.nodes:
        await Shop.register(node, "shop", lambda: Shop("sells socks"))
        model.register_agent(node.node_id, "shop", Shop)
    assert await mesh.nodes[0].send_message("socks", alice) == model.owner(alice)
