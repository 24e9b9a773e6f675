"""``python -m mesh peers`` (``agentmesh peers``) on a LAN of network namespaces: it lists the nodes
announced by mDNS with their mesh, node id, name, address and agent types, within its time bound,
and leaves the meshes it looked into as it found them. The command runs in a namespace of its own;
the test process never sends multicast.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from support.lan import AGENT_TYPES, Lan
from support.netns import Namespace, Network
from support.procs import CLEAN_ENV, NodeProcesses
from support.waiting import wait_until

from mesh._security import generate_keys

pytestmark = [pytest.mark.netns, pytest.mark.slow]

MakeNetwork = Callable[..., Network]
DISCOVERY_TIMEOUT_S = 15.0
# The command browses for --timeout (2 s), joins each mesh for at most 3 s, then leaves: bounded
# well below this even on a loaded machine.
COMMAND_TIMEOUT_S = 60.0


async def peers_command(namespace: Namespace, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run ``python -m mesh peers ARGS`` inside ``namespace`` (with a clean environment); exit code,
    stdout, seconds taken."""
    command = [*namespace.exec_prefix(), sys.executable, "-m", "mesh", "peers", *args]
    started = time.monotonic()
    with anyio.fail_after(COMMAND_TIMEOUT_S):
        result = await anyio.run_process(command, env=env or CLEAN_ENV, check=False)
    elapsed = time.monotonic() - started
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode in (0, 1), f"exit {result.returncode}: {stderr}"
    return result.returncode, result.stdout.decode(), elapsed


async def test_peers_lists_every_node_with_its_mesh_address_and_agent_types(
    make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str
) -> None:
    network = make_network(4)
    lan = Lan(network, node_procs, mesh_name)
    a, b = await lan.start("a", 0), await lan.start("b", 1)
    stranger = await lan.start("stranger", 2, mesh=f"{mesh_name}-other")
    await wait_until(lambda: lan.see_each_other([a, b]), DISCOVERY_TIMEOUT_S, what="a and b seeing each other")

    code, out, elapsed = await peers_command(network[3], "--json", "--timeout", "2")
    print(f"\n[lan] peers --json took {elapsed:.3f} s")
    assert code == 0
    rows = {row["node_id"]: row for row in json.loads(out)}
    assert set(rows) == {a.node_id, b.node_id, stranger.node_id}, out
    for proc, index, mesh in ((a, 0, mesh_name), (b, 1, mesh_name), (stranger, 2, f"{mesh_name}-other")):
        row = rows[proc.node_id]
        assert (row["mesh"], row["name"], row["addresses"]) == (mesh, proc.name, [network[index].ipv4]), row
        assert (row["status"], row["agent_types"], row["announced"]) == ("alive", AGENT_TYPES, True), row

    code, out, _ = await peers_command(network[3], "--mesh", mesh_name, "--timeout", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["MESH", "NODE", "ID", "NAME", "ADDRESS", "STATUS", "AGENT", "TYPES"], out
    assert sorted(line.split()[1] for line in lines[1:]) == sorted([a.node_id, b.node_id]), out
    assert all(line.endswith("echo, listener") and mesh_name in line for line in lines[1:]), out

    # The temporary nodes left gracefully: a and b see only each other again.
    await wait_until(lambda: lan.see_each_other([a, b]), DISCOVERY_TIMEOUT_S, what="a and b alone again")
    assert await lan.peers(stranger) == {}


async def test_peers_on_a_network_without_nodes_says_so_and_a_missing_mesh_exits_1(
    make_network: MakeNetwork,
) -> None:
    network = make_network(1, loopback_only=True)
    code, out, elapsed = await peers_command(network[0], "--timeout", "0.5")
    assert (code, out.strip()) == (0, "no agentmesh nodes found")
    assert elapsed < COMMAND_TIMEOUT_S
    code, out, _ = await peers_command(network[0], "--timeout", "0.5", "--mesh", "nobody-here", "--json")
    assert (code, json.loads(out)) == (1, [])


async def test_peers_of_a_secured_mesh_needs_its_key_to_show_agent_types(
    make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str, tmp_path: Path
) -> None:
    _, secret = generate_keys(tmp_path / "keys", "mesh")  # one shared mesh key
    keyed = {**CLEAN_ENV, "AGENTMESH_SECRET_KEY_FILE": str(secret)}
    network = make_network(3)
    lan = Lan(network, node_procs, mesh_name)
    a, b = await lan.start("a", 0, env=keyed), await lan.start("b", 1, env=keyed)
    await wait_until(lambda: lan.see_each_other([a, b]), DISCOVERY_TIMEOUT_S, what="a and b seeing each other")

    code, out, _ = await peers_command(network[2], "--json", "--timeout", "2")
    rows = {row["node_id"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == {a.node_id, b.node_id}, out
    for row in rows.values():  # found, but what they host is not for strangers
        assert row["secured"] and row["agent_types"] is None and row["status"] == "unreachable", row
        assert "AGENTMESH_SECRET_KEY_FILE" in row["note"], row

    code, out, _ = await peers_command(network[2], "--json", "--timeout", "2", env=keyed)
    rows = {row["node_id"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) == {a.node_id, b.node_id}, out
    for row in rows.values():
        assert (row["secured"], row["status"], row["agent_types"]) == (True, "alive", AGENT_TYPES), row
