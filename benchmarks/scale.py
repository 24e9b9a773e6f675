"""Scale: route convergence and idle traffic of real meshes of 2 to 64 nodes, and a simulated
mesh of 1 000 nodes.

Real meshes run several MeshNodes per process on loopback, at default timings (``MeshConfig()``):
2 nodes in 2 processes, 8 and more in at least 4 processes, and in more when a process would hold
over 1 000 ZeroMQ sockets (64 nodes: 5 processes). Convergence
is the time from the moment the last node's ``start()`` is called until every node's routing
table holds every node's agent type and subscription. Idle traffic is every byte and frame a node
sends (probes, acks, anti-entropy) over a window at rest, after convergence and a settling pause;
DESIGN §4 wants it flat as the mesh grows.

The simulation runs discovery's membership state machines (``discovery._sim.SimulatedMesh``) on a
fake clock at default ``MembershipConfig`` intervals, 0.5 ms one-way latency with up to 0.5 ms
jitter; every node joins through the first at time 0. The simulator charges no CPU time for
handling a message, so its convergence time is protocol rounds times latency; the real meshes
above carry the CPU cost.
"""

from __future__ import annotations

import math
import statistics
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from discovery import MembershipConfig
from discovery._sim import SimulatedMesh

from ._framework import Metric, RunContext, Scenario, Workload, format_value, group_plot, scenario, target
from ._procs import READY_TIMEOUT_S, Children, expect_all

SIZES = (2, 8, 32, 50, 64)
QUICK_SIZES = (2, 8)  # the larger meshes take minutes: --full only
MIN_PROCESSES = 4  # from 8 nodes up
# A node holds a ROUTER and a DEALER per peer, all in one ZeroMQ context per process, and libzmq
# allows 1 023 sockets per context unless told otherwise (ZMQ_MAX_SOCKETS, set with ctx.set()).
# Stay under that with room to spare, so the layout works whatever the context allows.
SOCKETS_PER_PROCESS = 1_000
CONVERGE_TIMEOUT_S = 150.0
# After convergence: let the last acknowledgements and syncs pass, then count for a window.
SETTLE_S = {"quick": 0.5, "full": 3.0}
WINDOW_S = {"quick": 1.0, "full": 10.0}
SIM_LATENCY_S = 0.0005
SIM_JITTER_S = 0.0005
SIM_TIMEOUT_S = 60.0  # simulated
SIM_REST_S = {"quick": 2.0, "full": 5.0}  # simulated seconds of idle traffic counted after convergence

METRICS = (
    Metric("convergence_ms", "routes converged", "ms", better="lower"),
    Metric("idle_bytes_per_s", "idle bytes sent per node", "B/s", better="lower"),
    Metric("idle_frames_per_s", "idle messages sent per node", "msg/s", better="lower"),
)


def processes_for(nodes: int) -> int:
    if nodes <= 2:
        return nodes
    return max(MIN_PROCESSES, math.ceil(nodes / (SOCKETS_PER_PROCESS // nodes)))


def _split(nodes: int, processes: int) -> list[int]:
    return [nodes // processes + (1 if i < nodes % processes else 0) for i in range(processes)]


def _real(nodes: int) -> Scenario:
    procs = processes_for(nodes)
    sc = scenario(
        f"scale.nodes_{nodes}",
        title=f"{nodes} nodes in {procs} processes: route convergence and idle traffic",
        description=(
            f"{nodes} MeshNodes ({'+'.join(map(str, _split(nodes, procs)))} per process), each "
            "hosting one agent type with one subscription, join through the first node at once. "
            "Convergence: from the last start() call to every node holding every route. Idle: bytes "
            "and messages each node sends per second at rest (mean over nodes), after a settling "
            "pause (0.5 s quick, 3 s full), over a window (1 s quick, 10 s full)."
        ),
        metrics=METRICS,
        workload=Workload(quick=nodes, full=nodes, unit="nodes"),
        message="no application messages: membership and routing metadata only",
        solo=True,
        in_quick=nodes in QUICK_SIZES,
        plot=False,
    )

    @sc.system("agentmesh", f"agentmesh, {nodes} nodes in {procs} processes", ours=True)
    def scale_mesh(run: RunContext) -> dict[str, float]:
        return _run_real(nodes, procs, run)

    return sc


def _run_real(nodes: int, procs: int, run: RunContext) -> dict[str, float]:
    mesh_name = f"bench-{uuid.uuid4().hex[:8]}"
    with Children() as kids:
        groups, first = [], 0
        for count in _split(nodes, procs):
            groups.append(kids.spawn("scale.group", mesh=mesh_name, first=first, count=count, total=nodes))
            first += count
        expect_all(groups, "ready", READY_TIMEOUT_S)
        groups[0].send("seed")
        seed = groups[0].expect("seed", READY_TIMEOUT_S)["address"]
        for g in groups:
            g.send("start", seed=seed)
        converged = expect_all(groups, "converged", CONVERGE_TIMEOUT_S)
        for g in groups:
            g.send("measure", settle_s=SETTLE_S[run.mode], window_s=WINDOW_S[run.mode])
        window = SETTLE_S[run.mode] + WINDOW_S[run.mode]
        rest = expect_all(groups, "rest", window + READY_TIMEOUT_S)
    incomplete = [name for r in rest for name in r["incomplete"]]
    if incomplete:
        raise RuntimeError(f"nodes lost routes at rest: {incomplete}")
    per_node_bytes = [b for r in rest for b in r["bytes_per_s"]]
    per_node_frames = [f for r in rest for f in r["frames_per_s"]]
    return {
        "convergence_ms": 1000 * (max(c["at"] for c in converged) - max(c["last_start"] for c in converged)),
        "idle_bytes_per_s": statistics.fmean(per_node_bytes),
        "idle_frames_per_s": statistics.fmean(per_node_frames),
    }


NODES = {n: _real(n) for n in SIZES}

SIMULATED = scenario(
    "scale.simulated",
    title="Membership of a simulated mesh (pure state machines, fake clock)",
    description=(
        "discovery._sim.SimulatedMesh at default MembershipConfig intervals, 0.5 ms latency with up "
        "to 0.5 ms jitter, every node joining through the first at time 0 (a different random seed "
        "per repetition). Convergence: simulated time until every node sees every node; it "
        "charges no CPU time per message. Idle: bytes and messages each node sends per simulated "
        "second over 5 s (2 s quick) after convergence. --quick simulates 200 nodes, --full 1 000."
    ),
    metrics=METRICS,
    workload=Workload(quick=200, full=1_000, unit="simulated nodes"),
    message="membership messages only (msgpack-encoded sizes)",
    solo=True,
    plot=False,
)


@SIMULATED.system("simulation", "discovery SWIM state machines, simulated", ours=True)
def simulate(run: RunContext) -> dict[str, float]:
    sim = SimulatedMesh(
        MembershipConfig(), seed=run.repetition, latency_s=SIM_LATENCY_S, jitter_s=SIM_JITTER_S, keep_log=False
    )
    for _ in range(run.n):
        sim.add_node()
    started = sim.now
    converged = sim.run_until_converged(SIM_TIMEOUT_S) - started
    before = {k: (n.sent_bytes, n.sent_messages) for k, n in sim.nodes.items()}
    rest_s = SIM_REST_S[run.mode]
    sim.run_for(rest_s)
    if not sim.converged():
        raise RuntimeError("the simulated mesh diverged at rest")
    return {
        # A convergence faster than the clock's resolution would read as 0: floor it at 1 µs.
        "convergence_ms": max(1000 * converged, 0.001),
        "idle_bytes_per_s": statistics.fmean((n.sent_bytes - before[k][0]) / rest_s for k, n in sim.nodes.items()),
        "idle_frames_per_s": statistics.fmean((n.sent_messages - before[k][1]) / rest_s for k, n in sim.nodes.items()),
    }


target(
    NODES[50], "convergence_ms", None, at_most=1000.0, text="routes converged <= 1 s after the last of 50 nodes joins"
)
target(
    SIMULATED,
    "convergence_ms",
    None,
    at_most=3000.0,
    in_quick=False,
    text="simulated 1 000 nodes converge <= 3 s (simulated)",
)


@group_plot("scale")
def plot_scale(scenarios: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Nodes vs convergence time and vs idle bytes/s per node; the simulation as its own series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(names: Sequence[str], key: str) -> tuple[list[int], list[float], list[list[float]]]:
        xs: list[int] = []
        ys: list[float] = []
        err: list[list[float]] = [[], []]
        for sc in sorted((s for s in scenarios if s["name"] in names), key=lambda s: s["workload"]["n"]):
            st = sc["systems"][0]["summary"][key]
            xs.append(sc["workload"]["n"])
            ys.append(st["median"])
            err[0].append(st["median"] - st["min"])
            err[1].append(st["max"] - st["median"])
        return xs, ys, err

    real = [f"scale.nodes_{n}" for n in SIZES]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    panels = (
        ("convergence_ms", "routes converged after the last start (ms)", 1000.0),
        ("idle_bytes_per_s", "bytes sent per node per second at rest", None),
    )
    for ax, (key, label, bound) in zip(axes, panels, strict=True):
        xs, ys, err = series(real, key)
        if xs:
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, color="#1f6fb4", label="real nodes, loopback")
        sx, sy, serr = series(["scale.simulated"], key)
        if sx:
            label_sim = "simulated" if key == "convergence_ms" else "simulated (membership payloads only)"
            ax.errorbar(sx, sy, yerr=serr, marker="s", capsize=4, linestyle="none", color="#d2691e", label=label_sim)
            for x, y in zip(sx, sy, strict=True):
                ax.annotate(format_value(y), (x, y), xytext=(-6, 6), textcoords="offset points", ha="right", fontsize=8)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(format_value(y), (x, y), xytext=(-6, 6), textcoords="offset points", ha="right", fontsize=8)
        if bound is not None:
            ax.axhline(bound, color="#b22222", linestyle="--", linewidth=1, label="target for 50 nodes (1 s)")
        ax.set_xscale("log")
        ax.set_xlabel("nodes in the mesh (log scale)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("scale: median of the repetitions, whiskers min-max; default MeshConfig timings", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
