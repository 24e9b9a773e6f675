"""TLS on the gRPC side: host mode does not serve a CURVE-secured mesh beyond loopback to workers it
does not authenticate; stock workers join over mutual TLS while other clients are refused; and the
bridge reaches a host served with mutual TLS. Certificates are made at test time (tls_certs.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import zmq.auth
from autogen_ext.runtimes.grpc.protos import agent_worker_pb2, agent_worker_pb2_grpc
from interop.harness import FAST_BRIDGE, Children
from interop.interop_messages import Answer, Ask
from interop.mesh_agents import Received, register_mesh_agents
from interop.tls_certs import Certs, make_certs

from mesh import AgentId, MeshNode, SecurityConfigError
from mesh.bridge import AgentRpcServer, GrpcBridge, _tls
from mesh.testing import FAST_CONFIG, wait_for

pytestmark = pytest.mark.interop

# One unary call of a probing client: its TLS handshake fails, or it is answered.
PROBE_TIMEOUT_S = 10.0


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def mesh_key(tmp_path: Path) -> Path:
    """One shared mesh key (the secret key file every node of the test's mesh gets)."""
    _, secret = zmq.auth.create_certificates(tmp_path, "mesh")
    return Path(secret)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees host mode's once-per-process warnings afresh."""
    monkeypatch.setattr(_tls, "_warned", set())


def worker_tls(certs: Certs) -> list[str]:
    """Arguments of worker_main.py for a TLS channel presenting the client certificate."""
    return ["--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]


async def get_subscriptions(address: str, credentials: Any) -> Any:
    """One raw ``GetSubscriptions`` with autogen-ext's generated stubs (plaintext if no credentials)."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(address, credentials)
    async with channel:
        stub = agent_worker_pb2_grpc.AgentRpcStub(channel)
        return await stub.GetSubscriptions(
            agent_worker_pb2.GetSubscriptionsRequest(), metadata=(("client-id", "probe"),), timeout=PROBE_TIMEOUT_S
        )


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.7:50051", "autogen-host.example:50051"])
async def test_a_secured_node_refuses_host_mode_beyond_loopback_without_mutual_tls(
    address: str, mesh_key: Path, certs: Certs
) -> None:
    async with MeshNode(name="secured", discovery="none", config=FAST_CONFIG, secret_key_file=mesh_key) as node:
        plaintext = AgentRpcServer(node, address, secret_key_file=mesh_key)
        with pytest.raises(SecurityConfigError, match="is secured with CURVE, but host mode would serve") as info:
            await plaintext.start()
        assert f"{address} in plaintext" in str(info.value)
        assert "tls_client_ca_file" in str(info.value) and "allow_insecure=True" in str(info.value)
        server_tls_only = AgentRpcServer(
            node, address, secret_key_file=mesh_key, tls_cert_file=certs.server_cert, tls_key_file=certs.server_key
        )
        with pytest.raises(SecurityConfigError, match=r"with TLS but without client certificates.*tls_client_ca_file"):
            await server_tls_only.start()
        with pytest.raises(RuntimeError, match="not started"):
            plaintext.port  # noqa: B018 -- nothing was bound


async def test_exposure_is_refused_or_warned_once(
    mesh_key: Path, certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    """The rule itself, without binding anything beyond loopback."""
    mutual = _tls.ServerTls(certs.server_cert, certs.server_key, certs.ca)
    server_only = _tls.ServerTls(certs.server_cert, certs.server_key)
    caplog.set_level(logging.WARNING, "mesh.bridge")
    async with (
        MeshNode(name="secured", discovery="none", config=FAST_CONFIG, secret_key_file=mesh_key) as secured,
        MeshNode(name="open", discovery="none", config=FAST_CONFIG) as open_node,
    ):
        for node in (secured, open_node):
            for tls in (None, server_only, mutual):
                _tls.check_exposure(node, "127.0.0.1:0", tls, allow_insecure=False)
                _tls.check_exposure(node, "localhost:50051", tls, allow_insecure=False)
                _tls.check_exposure(node, "[::1]:50051", tls, allow_insecure=False)
            _tls.check_exposure(node, "0.0.0.0:50051", mutual, allow_insecure=False)
        assert caplog.records == []

        for _ in range(2):
            _tls.check_exposure(secured, "0.0.0.0:50051", None, allow_insecure=True)
            _tls.check_exposure(open_node, "0.0.0.0:50051", server_only, allow_insecure=False)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 2, warnings
        assert "in plaintext for CURVE-secured node secured (allow_insecure)" in warnings[0]
        assert "with TLS but without client certificates: anyone who can reach it" in warnings[1]


async def test_incomplete_or_unreadable_tls_files_are_clear_errors(
    mesh_key: Path, certs: Certs, tmp_path: Path
) -> None:
    async with MeshNode(name="n", discovery="none", config=FAST_CONFIG) as node:
        with pytest.raises(ValueError, match="give both tls_cert_file and tls_key_file"):
            AgentRpcServer(node, tls_cert_file=certs.server_cert)
        with pytest.raises(ValueError, match="tls_client_ca_file needs tls_cert_file and tls_key_file"):
            AgentRpcServer(node, tls_client_ca_file=certs.ca)
        with pytest.raises(ValueError, match="give both tls_cert_file and tls_key_file"):
            GrpcBridge(node, "127.0.0.1:1", tls_cert_file=certs.client_cert)
        missing = tmp_path / "missing.pem"
        server = AgentRpcServer(node, tls_cert_file=missing, tls_key_file=certs.server_key)
        with pytest.raises(SecurityConfigError, match=r"cannot read the TLS certificate .*missing\.pem"):
            await server.start()
        bridge = GrpcBridge(node, "127.0.0.1:1", tls_ca_file=missing)
        with pytest.raises(SecurityConfigError, match=r"cannot read the TLS CA file .*missing\.pem"):
            await bridge.start()
        await bridge.stop()


async def test_a_stock_worker_joins_a_secured_mesh_over_mutual_tls_and_other_clients_are_refused(
    children: Children, mesh_key: Path, certs: Certs
) -> None:
    secured: dict[str, Any] = {"discovery": "none", "config": FAST_CONFIG, "secret_key_file": mesh_key}
    async with MeshNode(name="agents", **secured) as agents:
        received = Received()
        await register_mesh_agents(agents, received)
        async with MeshNode(name="a", seeds=[str(agents.address)], **secured) as a:
            server = AgentRpcServer(
                a,
                "127.0.0.1:0",
                config=FAST_BRIDGE,
                secret_key_file=mesh_key,
                tls_cert_file=certs.server_cert,
                tls_key_file=certs.server_key,
                tls_client_ca_file=certs.ca,
            )
            async with server:
                worker = await children.worker(server.address, *worker_tls(certs))
                await wait_for(lambda: "std_echo" in agents.routing_table.type_hosts, what="the worker's types")
                assert await agents.send_message(Ask("m"), AgentId("std_echo", "k")) == Answer("std:m")
                worker.send({"op": "call", "id": 1, "type": "mesh_echo", "key": "k", "text": "w"})
                assert await worker.expect(lambda line: line.get("reply") == 1) == {"reply": 1, "text": "mesh:w"}
                assert len(server.workers) == 1

                ca = certs.ca.read_bytes()
                good = grpc.ssl_channel_credentials(ca, certs.client_key.read_bytes(), certs.client_cert.read_bytes())
                assert (await get_subscriptions(server.address, good)).subscriptions
                stranger = grpc.ssl_channel_credentials(
                    ca, certs.stranger_key.read_bytes(), certs.stranger_cert.read_bytes()
                )
                for credentials in (None, grpc.ssl_channel_credentials(ca), stranger):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await get_subscriptions(server.address, credentials)
                    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                assert len(server.workers) == 1


async def test_the_bridge_reaches_a_host_served_with_mutual_tls(
    children: Children, mesh_nodes: Callable[..., Any], certs: Certs
) -> None:
    tls = {"--tls-cert": certs.server_cert, "--tls-key": certs.server_key, "--tls-client-ca": certs.ca}
    _, host = await children.host(0, *(str(part) for option in tls.items() for part in option))
    node = await mesh_nodes("bridge")
    received = Received()
    await register_mesh_agents(node, received)
    bridge = GrpcBridge(
        node,
        host,
        config=FAST_BRIDGE,
        tls_ca_file=certs.ca,
        tls_cert_file=certs.client_cert,
        tls_key_file=certs.client_key,
    )
    async with bridge:
        worker = await children.worker(host, *worker_tls(certs))
        await bridge.wait_connected()
        await bridge.sync()
        assert await node.send_message(Ask("t"), AgentId("std_echo", "k")) == Answer("std:t")
        worker.send({"op": "call", "id": 1, "type": "mesh_echo", "key": "k", "text": "t"})
        assert await worker.expect(lambda line: line.get("reply") == 1) == {"reply": 1, "text": "mesh:t"}
