"""The gRPC bridge against a stock AutoGen host and a stock AutoGen worker, each in its own process:
publishes and RPCs in all four directions, exactly once; protobuf payloads; errors and bounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq.auth
from google.protobuf.wrappers_pb2 import StringValue
from interop.harness import FAST_BRIDGE, Children
from interop.interop_messages import NEWS_TOPIC, Answer, Ask, Boom, News, Nothing
from interop.mesh_agents import MeshEcho, Received, factory, register_mesh_agents

from mesh import AgentId, MeshNode, RemoteAgentError, SerializationError, TopicId, UnknownAgentTypeError
from mesh.bridge import GrpcBridge
from mesh.testing import FAST_CONFIG, wait_for

pytestmark = pytest.mark.interop

STD_TYPES = {"std_echo", "std_listener", "std_listener2"}


async def bridged_mesh(
    children: Children, mesh_nodes: Callable[..., Any], *worker_args: str
) -> tuple[MeshNode, GrpcBridge, Received, Any]:
    """A host, a worker with the standard agents, and a mesh node with the mesh agents and a bridge,
    in step with each other."""
    _, host = await children.host()
    node = await mesh_nodes("m1")
    received = Received()
    await register_mesh_agents(node, received)
    bridge = GrpcBridge(node, host, config=FAST_BRIDGE)
    await bridge.start()
    worker = await children.worker(host, *worker_args)
    await bridge.wait_connected()
    await bridge.sync()
    assert bridge.standard_types >= STD_TYPES
    assert {"mesh_echo", "mesh_listener"} <= bridge.exported_types
    await wait_for(lambda: set(node.routing_table.type_hosts) >= STD_TYPES, what="the proxies in the view")
    return node, bridge, received, worker


async def register_mesh_agents_as(node: MeshNode, agent_type: str) -> None:
    await MeshEcho.register(node, agent_type, factory(MeshEcho, Received()))


def news(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == "news" and line.get("text") == text


async def test_rpcs_and_publishes_in_all_four_directions(children: Children, mesh_nodes: Callable[..., Any]) -> None:
    node, bridge, received, worker = await bridged_mesh(children, mesh_nodes)
    try:
        # mesh -> standard RPC
        reply = await node.send_message(Ask("hello"), AgentId("std_echo", "k1"), sender=AgentId("mesh_echo", "me"))
        assert reply == Answer("std:hello")
        asked = await worker.expect(lambda line: line.get("event") == "ask", what="the ask")
        assert asked["agent"] == "std_echo/k1" and asked["sender"] == "mesh_echo/me"

        # standard -> mesh RPC
        worker.send({"op": "call", "id": 1, "type": "mesh_echo", "key": "k2", "text": "hi"})
        answer = await worker.expect(lambda line: line.get("reply") == 1, what="the reply")
        assert answer == {"reply": 1, "text": "mesh:hi"}
        assert received.count("ask", "hi") == 1

        # mesh -> standard publish: the standard listener gets it once; the host's echo of it back
        # to the bridge (mesh_listener subscribes too) is dropped, so mesh_listener gets it once.
        before = bridge.statistics()
        await node.publish_message(News("from-mesh"), TopicId(NEWS_TOPIC, "s"))
        await worker.expect(
            lambda line: news("from-mesh")(line) and line["agent"] == "std_listener2/s", what="the mesh's news"
        )
        await received.expect("news", "from-mesh")
        echoes = before["echoes_dropped"] + 1
        await wait_for(lambda: bridge.statistics()["echoes_dropped"] == echoes, what="the host's echo")
        await bridge.sync()
        # Both standard listener types subscribe: the host got the publish once and delivered it to each.
        assert worker.count(news("from-mesh")) == 2
        assert {line["agent"] for line in worker.lines if news("from-mesh")(line)} == {
            "std_listener/s",
            "std_listener2/s",
        }
        assert received.count("news", "from-mesh") == 1
        assert bridge.statistics()["publishes_out"] == before["publishes_out"] + 1

        # standard -> mesh publish: mesh_listener gets it once, and the proxy of std_listener does
        # not send it back to the host (the worker got it from the host itself).
        before = bridge.statistics()
        worker.send({"op": "publish", "text": "from-std"})
        await received.expect("news", "from-std")
        await worker.expect(news("from-std"), what="the worker's own news")
        # A fence along the same path: once it arrived, anything the first publish caused has too.
        worker.send({"op": "publish", "text": "fence"})
        await received.expect("news", "fence")
        for agent in ("std_listener/w", "std_listener2/w"):
            await worker.expect(lambda line, a=agent: news("fence")(line) and line["agent"] == a, what="the fence")
        assert received.count("news", "from-std") == 1
        assert worker.count(news("from-std")) == 2  # std_listener and std_listener2, once each
        stats = bridge.statistics()
        assert stats["events_in"] == before["events_in"] + 2
        assert stats["publishes_out"] == before["publishes_out"]
    finally:
        await bridge.stop()


async def test_protobuf_payloads(children: Children, mesh_nodes: Callable[..., Any]) -> None:
    node, bridge, received, worker = await bridged_mesh(children, mesh_nodes, "--protobuf")
    try:
        # standard -> mesh publish of a protobuf message (the worker publishes in protobuf format)
        worker.send({"op": "publish", "text": "pb-from-std", "proto": True})
        await received.expect("proto", "pb-from-std")
        # mesh -> standard publish of a protobuf message (proto_data in the CloudEvent)
        await node.publish_message(StringValue(value="pb-from-mesh"), TopicId(NEWS_TOPIC, "s"))
        await worker.expect(lambda line: line.get("event") == "proto" and line["text"] == "pb-from-mesh")
        # mesh -> standard RPC with a protobuf request
        reply = await node.send_message(StringValue(value="x"), AgentId("std_echo", "k"))
        assert reply == Answer("std-proto:x")
    finally:
        await bridge.stop()


async def test_errors_reach_the_caller_and_every_call_is_bounded(
    children: Children, mesh_nodes: Callable[..., Any]
) -> None:
    node, bridge, _, worker = await bridged_mesh(children, mesh_nodes)
    try:
        # A standard handler raises: the mesh caller gets its text.
        with pytest.raises(RemoteAgentError, match="boom from a standard agent: b1"):
            await node.send_message(Boom("b1"), AgentId("std_echo", "k"))

        # A standard type that does not exist: a clear error at once.
        started = time.monotonic()
        with pytest.raises(UnknownAgentTypeError, match="std_nope"):
            await node.send_message(Ask("x"), AgentId("std_nope", "k"), timeout=5.0)
        assert time.monotonic() - started < 5.0

        # A standard handler returns None: the stock worker never answers; the bridge's bound ends it.
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="never answers when its handler returns None"):
            await node.send_message(Nothing("n"), AgentId("std_echo", "k"))
        assert time.monotonic() - started < FAST_BRIDGE.rpc_timeout_s + 5.0

        # A message AutoGen cannot decode (msgpack-native): refused at once, with the fix.
        with pytest.raises(SerializationError, match="dataclass, a pydantic model or a protobuf message"):
            await node.send_message("a plain str", AgentId("std_echo", "k"))

        # A mesh handler raises: the standard caller gets its text.
        worker.send({"op": "call", "id": 7, "type": "mesh_echo", "key": "k", "text": "b2", "message": "boom"})
        failed = await worker.expect(lambda line: line.get("reply") == 7)
        assert failed["error"] == "Exception: ValueError: boom from a mesh agent: b2"

        # A mesh handler returns None: the standard caller gets an error saying so, not silence.
        worker.send({"op": "call", "id": 8, "type": "mesh_echo", "key": "k", "text": "n", "message": "nothing"})
        failed = await worker.expect(lambda line: line.get("reply") == 8)
        assert "returned None" in failed["error"]

        # A mesh type the host still routes to the bridge (a host cannot unregister a type) but
        # that left the mesh: the standard caller gets an error, not silence.
        other = await mesh_nodes("m2", seeds=[node.address])
        await register_mesh_agents_as(other, "mesh_gone")
        await bridge.sync()
        assert "mesh_gone" in bridge.exported_types
        await other.stop()
        await wait_for(lambda: not node.routing_table.has_type("mesh_gone"), what="mesh_gone to leave the view")
        worker.send({"op": "call", "id": 9, "type": "mesh_gone", "key": "k", "text": "x"})
        failed = await worker.expect(lambda line: line.get("reply") == 9)
        assert "UnknownAgentTypeError" in failed["error"] and "mesh_gone" in failed["error"]
    finally:
        await bridge.stop()


async def test_a_mesh_secured_with_curve_bridges_with_the_node_s_keys(children: Children, tmp_path: Path) -> None:
    _, secret = zmq.auth.create_certificates(tmp_path, "mesh")
    _, host = await children.host()
    async with MeshNode(name="secured", discovery="none", config=FAST_CONFIG, secret_key_file=secret) as node:
        with pytest.raises(ValueError, match="secured with CURVE: give the bridge the node's secret_key_file"):
            await GrpcBridge(node, host, config=FAST_BRIDGE).start()
        received = Received()
        await register_mesh_agents(node, received)
        async with GrpcBridge(node, host, config=FAST_BRIDGE, secret_key_file=secret) as bridge:
            worker = await children.worker(host)
            await bridge.wait_connected()
            await bridge.sync()
            assert bridge.proxy_node is not None and bridge.proxy_node.public_key == node.public_key
            assert await node.send_message(Ask("s"), AgentId("std_echo", "k")) == Answer("std:s")
            worker.send({"op": "call", "id": 1, "type": "mesh_echo", "key": "k", "text": "s"})
            assert await worker.expect(lambda line: line.get("reply") == 1) == {"reply": 1, "text": "mesh:s"}
