"""``agentmesh top``: a live view of the mesh's nodes, from their counters.

A temporary node joins the mesh and, every interval, asks each peer for its statistics
(:meth:`MeshNode.peer_statistics`). Rates are counter deltas over the interval; agent types and
subscriptions come from the gossiped metadata. ``--once`` takes two samples one interval apart,
prints the table (or JSON) and exits.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import asdict, dataclass
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._node import MeshNode
from ._options import JoinOptions, quiet_visitor_logs, start_or_explain, with_join_options

# A peer's statistics answer takes a round trip; one that does not come in this long is shown as
# missing in this sample (the node may be suspect or overloaded).
STATS_TIMEOUT_S = 2.0
OUTPUT_WIDTH = 240


@dataclass
class Sample:
    node_id: str
    name: str
    address: str
    status: str
    agent_types: list[str]
    subscriptions: int
    stats: dict[str, Any] | None
    at: float
    error: str = ""


@dataclass
class Row:
    """One node as ``top`` shows it; rates are None until two samples exist."""

    name: str
    node_id: str
    address: str
    status: str
    agent_types: list[str]
    subscriptions: int
    agents: int | None
    published_per_s: float | None
    handled_per_s: float | None
    rpc_per_s: float | None
    rpc_p50_us: float | None
    rpc_p99_us: float | None
    bad_frames: int | None
    handler_errors: int | None
    lost: int | None
    queued: int | None
    error: str = ""


async def take_sample(node: MeshNode, timeout_s: float = STATS_TIMEOUT_S) -> dict[str, Sample]:
    peers = node.peers
    answers = await asyncio.gather(
        *(node.peer_statistics(p.node_id, timeout=timeout_s) for p in peers), return_exceptions=True
    )
    now = time.monotonic()
    samples = {}
    for peer, answer in zip(peers, answers, strict=True):
        ok = isinstance(answer, dict)
        samples[peer.node_id] = Sample(
            node_id=peer.node_id,
            name=peer.name,
            address=peer.address.partition("#")[0],
            status=peer.status,
            agent_types=sorted(peer.agent_types),
            subscriptions=len(peer.subscriptions),
            stats=answer if isinstance(answer, dict) else None,
            at=now,
            error="" if ok else f"no statistics: {type(answer).__name__} {answer}".strip(),
        )
    return samples


def _rate(key: str, now: Sample, before: Sample | None) -> float | None:
    if before is None or before.stats is None or now.stats is None or now.at <= before.at:
        return None
    return max(0, int(now.stats.get(key, 0)) - int(before.stats.get(key, 0))) / (now.at - before.at)


def make_rows(now: dict[str, Sample], before: dict[str, Sample]) -> list[Row]:
    rows = []
    for sample in sorted(now.values(), key=lambda s: (s.name, s.node_id)):
        stats, prev = sample.stats or {}, before.get(sample.node_id)
        known = sample.stats is not None

        def count(*keys: str, stats: dict[str, Any] = stats, known: bool = known) -> int | None:
            return sum(int(stats.get(k, 0)) for k in keys) if known else None

        rows.append(
            Row(
                name=sample.name,
                node_id=sample.node_id,
                address=sample.address,
                status=sample.status,
                agent_types=sample.agent_types,
                subscriptions=sample.subscriptions,
                agents=count("agents"),
                published_per_s=_rate("published", sample, prev),
                handled_per_s=_rate("delivered", sample, prev),
                rpc_per_s=_rate("sent", sample, prev),
                rpc_p50_us=stats.get("rpc_latency_p50_us"),
                rpc_p99_us=stats.get("rpc_latency_p99_us"),
                bad_frames=count("bad_frames"),
                handler_errors=count("handler_errors"),
                lost=count("lost_in_flight", "undeliverable"),
                queued=count("queued"),
                error=sample.error,
            )
        )
    return rows


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def render(mesh: str, rows: list[Row]) -> Table:
    handled = sum(r.handled_per_s or 0 for r in rows)
    nodes = f"{len(rows)} node" + ("s" if len(rows) != 1 else "")
    title = f"mesh {mesh}: {nodes}, {handled:,.0f} messages handled/s  ({time.strftime('%H:%M:%S')})"
    table = Table(title=title, title_justify="left")
    for header in ("NODE", "ADDRESS", "STATUS", "AGENT TYPES", "SUBS", "AGENTS"):
        table.add_column(header, justify="right" if header in ("SUBS", "AGENTS") else "left")
    for header in ("PUB/S", "HANDLED/S", "RPC/S", "RPC P50 µs", "RPC P99 µs", "BAD FRAMES", "ERRORS", "LOST", "QUEUED"):
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(
            r.name,
            r.address,
            r.status if not r.error else f"{r.status} (no answer)",
            ", ".join(r.agent_types) or "-",
            str(r.subscriptions),
            _num(r.agents),
            _num(r.published_per_s, 1),
            _num(r.handled_per_s, 1),
            _num(r.rpc_per_s, 1),
            _num(r.rpc_p50_us, 1),
            _num(r.rpc_p99_us, 1),
            _num(r.bad_frames),
            _num(r.handler_errors),
            _num(r.lost),
            _num(r.queued),
            style="red" if r.error or r.status != "alive" else None,
        )
    return table


async def run_top(
    join: JoinOptions, *, once: bool, interval_s: float, wait_s: float, duration_s: float | None, as_json: bool
) -> int:
    node = join.visitor("top")
    console = Console()
    if not console.is_terminal:
        console = Console(width=OUTPUT_WIDTH)  # a file or a pipe: no columns cut to 80 characters
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if not await start_or_explain(node, "top"):
            return 1
        try:
            await node.wait_for_peers(1, timeout=wait_s)
        except TimeoutError:
            click.echo(f"agentmesh top: no node of mesh {node.mesh} answered within {wait_s} s", err=True)
            return 1
        stats_timeout_s = min(STATS_TIMEOUT_S, interval_s)
        before = await take_sample(node, stats_timeout_s)
        if once:
            # Rates are deltas over an interval: sample again until every node seen has two samples
            # (the first node tells about the others, which then join this node's view), within --wait.
            deadline = loop.time() + wait_s
            while True:  # bounded by the deadline
                await asyncio.sleep(interval_s)  # the measurement itself
                now = await take_sample(node, stats_timeout_s)
                new = {node_id: sample for node_id, sample in now.items() if node_id not in before}
                if not new or loop.time() >= deadline:
                    break
                before.update(new)
            rows = make_rows(now, before)
            if as_json:
                click.echo(json.dumps([asdict(r) for r in rows], indent=2))
            else:
                console.print(render(node.mesh, rows))
            return 0
        end = None if duration_s is None else loop.time() + duration_s
        with Live(render(node.mesh, make_rows(before, {})), console=console, auto_refresh=False) as live:
            while not stop.is_set() and (end is None or loop.time() < end):
                remaining = interval_s if end is None else min(interval_s, max(0.0, end - loop.time()))
                try:
                    await asyncio.wait_for(stop.wait(), remaining)
                except TimeoutError:
                    pass  # the refresh interval
                now = await take_sample(node, stats_timeout_s)
                live.update(render(node.mesh, make_rows(now, before)), refresh=True)
                before = now
        return 0
    finally:
        await node.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


@click.command("top")
@with_join_options
@click.option("--once", is_flag=True, help="Print one snapshot (two samples one interval apart) and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: the rows as JSON.")
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes (and the span of the rates).",
)
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    help="How long to wait for the first node of the mesh (exit code 1 if none).",
)
@click.option("--duration", "duration_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="End the live view after this many seconds (default: Ctrl-C).")  # fmt: skip
def top(
    join: JoinOptions, once: bool, as_json: bool, interval_s: float, wait_s: float, duration_s: float | None
) -> None:
    """A live view of the mesh, refreshed every second: nodes, their agent types, subscriptions and
    live agents, message rates, RPC latency percentiles, bad frames, handler errors, losses and
    queue depth, from each node's counters."""
    if as_json and not once:
        raise click.UsageError("--json needs --once")
    with quiet_visitor_logs():
        code = asyncio.run(
            run_top(join, once=once, interval_s=interval_s, wait_s=wait_s, duration_s=duration_s, as_json=as_json)
        )
    raise SystemExit(code)
