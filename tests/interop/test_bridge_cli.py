"""``agentmesh bridge`` (the CLI form of ``python -m mesh.bridge``) connects a mesh and a standard
AutoGen host: calls cross both ways, and it leaves cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner
from interop.harness import Children
from interop.mesh_agents import Received, register_mesh_agents
from interop.test_failover import call_round_trip, proxy_nodes, wait_until_exported

from mesh.bridge import BridgeConfig
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
