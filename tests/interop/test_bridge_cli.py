"""``agentmesh bridge`` (the CLI form of ``python -m mesh.bridge``) connects a mesh and a standard
AutoGen host: calls cross both ways, and it leaves cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from interop.harness import Children
from interop.mesh_agents import Received, register_mesh_agents
from interop.test_failover import call_round_trip, proxy_nodes, wait_until_exported

from mesh import MeshNode
from mesh.bridge import BridgeConfig, GrpcBridge
from mesh.bridge._config import check_host_address
from mesh.cli import main
from mesh.cli._bridge_cmd import POLL_INTERVAL_S, RPC_TIMEOUT_S
from mesh.testing import wait_for

pytestmark = pytest.mark.interop

# A proxy node joining and the host connection, on a loaded 2-core machine.
BRIDGE_UP_S = 30.0
STOP_S = 20.0


async def test_agentmesh_bridge_carries_calls_both_ways_and_stops_on_sigterm(
    children: Children, mesh_nodes: Callable[..., Any]
) -> None:
    _, host = await children.host()
    agents = await mesh_nodes("agents")
    await register_mesh_agents(agents, Received())
    argv = ["-m", "mesh", "bridge", "--host", host, "--seed", str(agents.address), "--poll-interval", "0.2"]
    bridge = await children.start("bridge", [*argv, "--name", "cli-bridge"], ready="address")
    assert bridge.lines[0]["name"] == "cli-bridge" and bridge.lines[0]["pid"] == bridge.pid
    worker = await children.worker(host)
    await wait_for(lambda: proxy_nodes(agents) == ["cli-bridge/grpc-bridge"], BRIDGE_UP_S, "the bridge's proxy node")
    await wait_until_exported(worker)
    await call_round_trip(agents, worker, 1)

    os.kill(bridge.pid, signal.SIGTERM)
    assert await asyncio.to_thread(bridge.popen.wait, STOP_S) == 0
    await wait_for(lambda: proxy_nodes(agents) == [], BRIDGE_UP_S, "the proxy node leaving with the bridge")


def test_the_bridge_command_documents_its_options_and_environment_variables() -> None:
    result = CliRunner().invoke(main, ["bridge", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for text in ("--host HOST:PORT", "AGENTMESH_BRIDGE_HOST", "--seed", "AGENTMESH_SEEDS", "AGENTMESH_SECRET_KEY_FILE"):
        assert text in result.output
    for text in ("--tls", "--tls-ca-file", "--tls-cert-file", "--tls-key-file"):
        assert text in result.output
    missing = CliRunner().invoke(main, ["bridge"])
    assert missing.exit_code == 2 and "Missing option '--host'" in missing.output
    half = CliRunner().invoke(main, ["bridge", "--host", "h:1", "--tls-cert-file", __file__])
    assert half.exit_code == 2 and "give both --tls-cert-file and --tls-key-file" in half.output
    assert (BridgeConfig.rpc_timeout_s, BridgeConfig.poll_interval_s) == (RPC_TIMEOUT_S, POLL_INTERVAL_S)


@pytest.mark.parametrize(
    "address", ["nohostport", "127.0.0.1:99999", "127.0.0.1:0", ":50051", "::1:50051", "http://h:1"]
)
def test_a_host_address_without_a_host_and_a_port_is_a_usage_error(address: str) -> None:
    result = CliRunner().invoke(main, ["bridge", "--host", address])
    assert result.exit_code == 2, result.output
    assert "HOST:PORT with a port 1-65535" in result.output


@pytest.mark.parametrize("address", ["localhost:50051", "127.0.0.1:1", "[::1]:65535", "host.example:443"])
def test_host_addresses_are_accepted(address: str) -> None:
    assert check_host_address(address) == address
    assert GrpcBridge(MeshNode(discovery="none"), address).host_address == address  # made, not started


def test_the_bridge_refuses_a_bad_host_address_too() -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        GrpcBridge(MeshNode(discovery="none"), "127.0.0.1:99999")


async def test_a_host_that_never_answers_is_reported_once_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Not only at INFO: someone running the bridge at the default level learns the host is not
    there; the retries after the first failure stay quiet."""
    config = BridgeConfig(connect_timeout_s=0.2, reconnect_initial_s=0.05, reconnect_max_s=0.05)
    caplog.set_level(logging.INFO, logger="mesh.bridge")
    async with MeshNode(discovery="none") as node:
        bridge = GrpcBridge(node, f"127.0.0.1:{_free_port()}", config=config)
        await bridge.start()
        try:
            await wait_for(lambda: len(_failures(caplog)) >= 3, 30, "three failed attempts")
        finally:
            await bridge.stop()
    levels = [record.levelno for record in _failures(caplog)]
    assert levels[0] == logging.WARNING and set(levels[1:]) == {logging.INFO}, levels


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "retrying in about" in r.getMessage()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
