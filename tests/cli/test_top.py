"""``agentmesh top`` shows every node of the mesh with its agent types, subscriptions, message rates
from counter deltas and RPC latency: ``--once`` as a table or JSON, and the live view for a bounded
time. With nothing to join it says so and exits 1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from support.cli import Children

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, TopicId, event, rpc, type_subscription

WAIT_S = 15.0


@type_subscription("chatter")
class Echo(RoutedAgent):
    @rpc
    async def echo(self, message: str, ctx: MessageContext) -> str:
        return message

    @event
    async def on_chatter(self, message: str, ctx: MessageContext) -> None:
        pass


@asynccontextmanager
async def traffic(caller: MeshNode) -> AsyncIterator[None]:
    """``caller`` calls and publishes to the echo agents until the block ends."""

    async def loop() -> None:
        i = 0
        while True:  # until cancelled at the end of the block
            await caller.send_message("ping", AgentId("echo", f"k{i % 7}"), timeout=WAIT_S)
            await caller.publish_message("hello", TopicId("chatter", f"k{i % 7}"))
            i += 1
            await asyncio.sleep(0.005)  # a steady rate, not a flood

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def two_nodes(nodes: Callable[..., Any]) -> tuple[MeshNode, MeshNode]:
    host = await nodes("echo-host")
    await Echo.register(host, "echo", lambda: Echo("echoes"))
    caller = await nodes("caller", seeds=[host.address])
    await caller.wait_for_peers(1, timeout=WAIT_S)
    return host, caller


def top_args(node: MeshNode, *args: str) -> list[str]:
    return ["-m", "mesh", "top", *args, "--seed", str(node.address), "--discovery", "none"]


async def test_top_once_json_shows_each_node_with_its_rates_and_latency(
    children: Children, nodes: Callable[..., Any]
) -> None:
    host, caller = await two_nodes(nodes)
    async with traffic(caller):
        result = await children.run("top", top_args(host, "--once", "--json", "--interval", "0.5"))
    assert result.code == 0, result
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"echo-host", "caller"}, rows
    echo, calls = rows["echo-host"], rows["caller"]
    assert (echo["agent_types"], echo["status"], echo["address"]) == (["echo"], "alive", host.address)
    assert echo["subscriptions"] == 2  # chatter -> echo, and the direct-message prefix "echo:"
    assert calls["agent_types"] == [] and calls["subscriptions"] == 0
    assert echo["agents"] == 7 and echo["handled_per_s"] > 0 and echo["published_per_s"] == 0
    assert calls["rpc_per_s"] > 0 and calls["published_per_s"] > 0 and calls["handled_per_s"] == 0
    assert 0 < calls["rpc_p50_us"] <= calls["rpc_p99_us"]
    for row in rows.values():
        assert (row["bad_frames"], row["handler_errors"], row["lost"], row["error"]) == (0, 0, 0, ""), row


async def test_top_once_prints_a_table(children: Children, nodes: Callable[..., Any]) -> None:
    host, caller = await two_nodes(nodes)
    async with traffic(caller):
        result = await children.run("top", top_args(caller, "--once", "--interval", "0.3"))
    assert result.code == 0, result
    lines = result.stdout.splitlines()
    assert lines[0].startswith("mesh default: 2 nodes, "), result.stdout
    header = next(line for line in lines if "NODE" in line)
    for column in ("ADDRESS", "AGENT TYPES", "SUBS", "PUB/S", "HANDLED/S", "RPC/S", "RPC P50 µs", "BAD FRAMES"):
        assert column in header, header
    echo_row = next(line for line in lines if "echo-host" in line)
    assert host.address in echo_row and " echo " in echo_row, echo_row


async def test_the_live_view_refreshes_until_its_duration_ends(children: Children, nodes: Callable[..., Any]) -> None:
    host, caller = await two_nodes(nodes)
    async with traffic(caller):
        result = await children.run("top", top_args(host, "--duration", "1", "--interval", "0.3"))
    assert result.code == 0, result
    assert "echo-host" in result.stdout and "caller" in result.stdout, result.stdout


async def test_top_with_nobody_to_join_exits_1(children: Children, nodes: Callable[..., Any]) -> None:
    lonely = await nodes("lonely")
    await lonely.stop()  # its address now answers nothing
    result = await children.run("top", top_args(lonely, "--once", "--wait", "0.5"), timeout_s=60.0)
    assert result.code == 1, result
    assert "agentmesh top: no node of mesh default answered within 0.5 s" in result.stderr


async def test_json_without_once_is_a_usage_error(children: Children) -> None:
    result = await children.run("top", ["-m", "mesh", "top", "--json", "--discovery", "none"])
    assert result.code == 2 and "--json needs --once" in result.stderr, result
