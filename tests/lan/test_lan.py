"""The mesh on a LAN (DESIGN §4, §6): one node process per Linux network namespace, the namespaces
joined by a bridge, real mDNS and no seeds. Nodes find each other, exchange publishes and RPCs, lose
a node when its cable is pulled, take it back when it is plugged in again, ignore nodes of another
mesh, and do the same over IPv6. The test process never sends multicast itself: every node runs in
a namespace the test creates and deletes (tests/support/netns.py).

Discovery and detection times are printed (run with ``-s``) and recorded as junit properties.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from support.lan import Lan, exercise
from support.netns import Network
from support.procs import CLEAN_ENV, NodeProcess, NodeProcessError, NodeProcesses
from support.waiting import wait_until

pytestmark = [pytest.mark.netns, pytest.mark.slow]

NAMES = ("a", "b", "c")
# mDNS announcement, browse, resolve and the join; measured at well under a second (~0.1 s), this
# bound is for a loaded 2-core machine.
DISCOVERY_TIMEOUT_S = 15.0
# The default failure detection declares a silent peer dead within about 2.5 s (worst case 3.5 s
# with three nodes, tests/discovery/test_swim.py); generous for a loaded machine, as in
# tests/mesh/test_processes.py.
DETECTION_BOUND_S = 6.0
# A node cut off declares the others dead too; once its cable is back, one side knocks on the
# other's door every reconnect interval (2 s), learns it was declared dead and rejoins.
REJOIN_TIMEOUT_S = 20.0
MakeNetwork = Callable[..., Network]
LOOPBACK_MESH = Path(__file__).resolve().parent.parent / "support" / "loopback_mesh.py"


def report(record_property: pytest.RecordProperty, name: str, seconds: float) -> None:
    print(f"\n[lan] {name}: {seconds:.3f} s")
    record_property(name, round(seconds, 3))


async def start_three(lan: Lan, record_property: pytest.RecordProperty) -> None:
    """Start a, b, c (one per namespace); measure the discovery time from the last node's start."""
    for i, name in enumerate(NAMES[:-1]):
        await lan.start(name, i)
    spawned = time.monotonic()
    await lan.start(NAMES[-1], len(NAMES) - 1)
    ready = time.monotonic()
    nodes = [lan.nodes[name] for name in NAMES]
    await wait_until(lambda: lan.see_each_other(nodes), DISCOVERY_TIMEOUT_S, what="a, b, c seeing each other")
    found = time.monotonic()
    report(record_property, "discovery_s_from_ready", found - ready)
    report(record_property, "discovery_s_from_spawn", found - spawned)


async def test_three_nodes_find_each_other_by_mdns_and_exchange_publishes_and_rpcs(
    lan: Lan, record_property: pytest.RecordProperty
) -> None:
    await start_three(lan, record_property)
    a, b, c = (lan.nodes[name] for name in NAMES)
    for proc in (a, b, c):
        peers = await lan.peers(proc)
        assert {p["address"].rpartition(":")[0] for p in peers.values()} == {
            f"tcp://{lan.network[i].ipv4}" for i, other in enumerate((a, b, c)) if other is not proc
        }, "peers are reached on their namespace addresses"
        assert all(p["status"] == "alive" for p in peers.values())
    await exercise([a, b, c], set(NAMES), "first")


async def pull_cable(lan: Lan, index: int) -> float:
    """Pull node ``index``'s cable; return once the others declared it dead (the time it took)."""
    cut = lan.nodes[NAMES[index]]
    others = [lan.nodes[name] for i, name in enumerate(NAMES) if i != index]
    lan.network.cut(index)
    cut_at = time.monotonic()

    async def declared_dead() -> bool:
        return all(cut.node_id not in peers for peers in [await lan.peers(p) for p in others])

    await wait_until(declared_dead, DETECTION_BOUND_S + 5.0, what=f"{cut.name} declared dead by the others")
    return time.monotonic() - cut_at


async def plug_cable_back(lan: Lan, index: int) -> float:
    """Plug node ``index``'s cable back; return once everyone sees everyone again and the node is
    back under a new incarnation (the time it took)."""
    back = lan.nodes[NAMES[index]]
    nodes = [lan.nodes[name] for name in NAMES]
    others = [p for p in nodes if p is not back]
    before = {p.name: (await lan.peers(p)).get(back.node_id, {}).get("incarnation", 0) for p in others}
    old = (await back.request("info"))["incarnation"]
    lan.network.restore(index)
    restored_at = time.monotonic()

    async def rejoined() -> bool:
        views = [await lan.peers(p) for p in others]
        newer = all(back.node_id in v and v[back.node_id]["incarnation"] > old for v in views)
        return newer and await lan.see_each_other(nodes)

    await wait_until(rejoined, REJOIN_TIMEOUT_S, what=f"{back.name} rejoining with a new incarnation (was {before})")
    return time.monotonic() - restored_at


async def traffic_resumes(nodes: list[NodeProcess], tag: str, timeout_s: float) -> int:
    """Run :func:`exercise` until one full round succeeds (bounded); the rounds that failed."""
    deadline = time.monotonic() + timeout_s
    failed = 0
    while True:  # bounded by the deadline
        try:
            await exercise(nodes, {p.name for p in nodes}, f"{tag}{failed}")
            return failed
        except AssertionError as exc:
            failed += 1
            print(f"\n[lan] traffic after the heal, round {failed} failed: {str(exc)[:300]}")
            if time.monotonic() > deadline:
                raise


async def test_a_node_whose_cable_is_pulled_is_declared_dead_and_rejoins_when_it_is_plugged_back(
    lan: Lan, record_property: pytest.RecordProperty
) -> None:
    await start_three(lan, record_property)
    a, b, c = (lan.nodes[name] for name in NAMES)

    detection_s = await pull_cable(lan, 2)
    report(record_property, "detection_s", detection_s)
    assert detection_s < DETECTION_BOUND_S, f"c was declared dead after {detection_s:.3f} s\n{await lan.views()}"
    assert await lan.see_each_other([a, b]), await lan.views()
    await exercise([a, b], {"a", "b"}, "cut")  # the two keep working, and own c's keys now

    report(record_property, "rejoin_s", await plug_cable_back(lan, 2))
    info = await c.request("info")
    assert info["incarnation"] > c.incarnation and info["statistics"].get("rejoined", 0) >= 1, info
    await traffic_resumes([a, b, c], "restored", REJOIN_TIMEOUT_S)


async def test_the_nodes_that_kept_their_link_are_not_disturbed_when_the_cut_node_comes_back(
    lan: Lan, record_property: pytest.RecordProperty
) -> None:
    """After the heal, only the node that was cut off rejoins: a and b stayed connected to each other
    the whole time, so they keep their incarnations and their calls to each other never fail. Three
    cycles, because what disturbs them depends on timing (frames delayed by the cut)."""
    await start_three(lan, record_property)
    a, b, _ = (lan.nodes[name] for name in NAMES)
    for cycle in range(3):
        await pull_cable(lan, 2)
        await plug_cable_back(lan, 2)
        failed = await traffic_resumes([lan.nodes[name] for name in NAMES], f"cycle{cycle}-", REJOIN_TIMEOUT_S)
        assert failed == 0, f"cycle {cycle}: calls between nodes that never lost their link failed after the heal"
    for proc in (a, b):
        info = await proc.request("info")
        assert (info["incarnation"], info["statistics"].get("rejoined", 0)) == (proc.incarnation, 0), (
            f"{proc.name} was made to rejoin by the node that had been cut off: {info['statistics']}"
        )


async def test_a_node_of_another_mesh_is_seen_by_mdns_and_ignored(
    make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str
) -> None:
    lan = Lan(make_network(4), node_procs, mesh_name)
    for i, name in enumerate(NAMES):
        await lan.start(name, i)
    stranger = await lan.start("stranger", 3, mesh=f"{mesh_name}-other")
    nodes = [lan.nodes[name] for name in NAMES]
    await wait_until(lambda: lan.see_each_other(nodes), DISCOVERY_TIMEOUT_S, what="a, b, c seeing each other")

    async def announcements_crossed() -> bool:
        seen_by_stranger = (await stranger.request("info"))["mdns_seen"]
        if not all(seen_by_stranger.get(p.node_id) == mesh_name for p in nodes):
            return False
        infos = [await p.request("info") for p in nodes]
        return all(info["mdns_seen"].get(stranger.node_id) == f"{mesh_name}-other" for info in infos)

    # Both sides did receive the other's announcement: what follows is a decision, not a miss.
    await wait_until(announcements_crossed, DISCOVERY_TIMEOUT_S, what="announcements reaching both meshes")
    await exercise(nodes, set(NAMES), "meanwhile")  # seconds of traffic and gossip after that
    assert await lan.peers(stranger) == {}
    for proc in nodes:
        assert stranger.node_id not in await lan.peers(proc)
    for proc in [*nodes, stranger]:  # nobody even tried: a JOIN across meshes is logged as refused
        assert "membership refused" not in proc.log(), proc.log()


async def test_nodes_bound_to_ipv6_addresses_find_each_other_over_ipv6_mdns(
    make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str, record_property: pytest.RecordProperty
) -> None:
    network = make_network(3, ipv6=True)  # fails loudly, with the reason, if IPv6 cannot be set up
    lan = Lan(network, node_procs, mesh_name)
    for i, name in enumerate(NAMES):
        await lan.start(name, i, host=network[i].ipv6)
    nodes = [lan.nodes[name] for name in NAMES]
    started = time.monotonic()
    await wait_until(lambda: lan.see_each_other(nodes), DISCOVERY_TIMEOUT_S, what="IPv6 nodes seeing each other")
    report(record_property, "ipv6_discovery_s_from_ready", time.monotonic() - started)
    for i, proc in enumerate(nodes):
        assert proc.address.startswith(f"tcp://[{network[i].ipv6}]:")
        addresses = {p["address"].rpartition(":")[0] for p in (await lan.peers(proc)).values()}
        assert addresses == {f"tcp://[{network[j].ipv6}]" for j in range(3) if j != i}
    await exercise(nodes, set(NAMES), "ipv6")


async def test_environment_of_the_test_process_does_not_reach_the_nodes(
    lan: Lan, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Either of these would stop a node from starting if it leaked into its environment.
    poison = {"AGENTMESH_MDNS_INTERFACES": "no-such-interface0", "AGENTMESH_SECRET_KEY_FILE": "/no/such/key_secret"}
    for name, value in poison.items():
        monkeypatch.setenv(name, value)
    a, b = await lan.start("a", 0), await lan.start("b", 1)
    await wait_until(lambda: lan.see_each_other([a, b]), DISCOVERY_TIMEOUT_S, what="a and b seeing each other")
    for proc in (a, b):
        info = await proc.request("info", env=sorted(poison))
        assert info["env"] == dict.fromkeys(poison), info["env"]
    # The control: the same node given the test process's environment does not start.
    with pytest.raises(NodeProcessError, match=r"no-such-interface0|/no/such/key_secret"):
        await lan.start("leaky", 2, env=dict(os.environ))


async def test_nodes_bound_to_all_addresses_advertise_their_lan_address(
    make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str
) -> None:
    """``host="0.0.0.0"`` is the no-configuration LAN setup (README, LAN deployment): the address a
    node advertises must be one its peers can reach, never loopback (DESIGN §4)."""
    network = make_network(2)
    lan = Lan(network, node_procs, mesh_name)
    a = await lan.start("a", 0, host="0.0.0.0")
    b = await lan.start("b", 1, host="0.0.0.0")
    for i, proc in enumerate((a, b)):
        assert proc.address.startswith(f"tcp://{network[i].ipv4}:"), f"{proc.name} advertises {proc.address}"
    await wait_until(lambda: lan.see_each_other([a, b]), DISCOVERY_TIMEOUT_S, what="a and b seeing each other")
    await exercise([a, b], {"a", "b"}, "wildcard")


async def test_several_nodes_in_one_process_find_each_other_over_loopback_in_a_namespace(
    make_network: MakeNetwork, mesh_name: str, record_property: pytest.RecordProperty
) -> None:
    """The one-machine setup (``make demo``): a loopback-only namespace, nodes on 127.0.0.1."""
    network = make_network(1, loopback_only=True)
    command = [*network[0].exec_prefix(), sys.executable, str(LOOPBACK_MESH), "--nodes", "4", "--mesh", mesh_name]
    with anyio.fail_after(60):
        result = await anyio.run_process(command, env=CLEAN_ENV, check=False)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    outcome = json.loads(result.stdout.decode().strip().splitlines()[-1])
    names = [f"loop{i}" for i in range(4)]
    assert outcome["answered_by"] == names and outcome["news_seen_on"] == names, outcome
    report(record_property, "loopback_discovery_s", outcome["discovery_s"])
