"""Cross-process RPC: sequential latency (p50, p99) and throughput with 64 concurrent callers.

Ours: a caller MeshNode and a MeshNode hosting an @rpc agent, in two processes. Baselines: AutoGen's
gRPC runtime (host + caller worker + agent worker, three processes) and raw pyzmq request/reply
(DEALER client, ROUTER server that sends every request back) in two processes, driven by
``zmq.asyncio`` and by blocking sockets. Each repetition starts fresh processes.
"""

from __future__ import annotations

import uuid

from ._framework import Metric, RunContext, Workload, scenario, target
from ._procs import READY_TIMEOUT_S, Child, Children, expect_all
from ._workload import PAYLOAD_DESCRIPTION

CONCURRENCY = 64
# Far above any plausible run: the slowest system makes about a thousand calls per second.
BASE_TIMEOUT_S = 60.0
SLOWEST_CALLS_PER_S = 200.0

CROSSPROCESS = scenario(
    "rpc.crossprocess",
    title="RPC across processes: sequential latency, and 64 concurrent callers",
    description=(
        "Process A calls an agent in process B with send_message and awaits an Ack (AutoGen: "
        "through the host in a third process; raw pyzmq: the ROUTER sends the bytes back). After "
        "an untimed warm-up of a tenth as many calls (at least 100), n sequential calls are timed "
        f"one by one; then {CONCURRENCY} callers in A share another n calls, timed together."
    ),
    metrics=(
        Metric("p50_us", "p50 latency", "µs", better="lower"),
        Metric("p99_us", "p99 latency", "µs", better="lower"),
        Metric("per_s", f"{CONCURRENCY} concurrent callers", "calls/s", better="higher"),
    ),
    workload=Workload(quick=300, full=10_000, unit="calls per phase"),
    message=f"{PAYLOAD_DESCRIPTION}; reply Ack(seq: int); raw pyzmq echoes the 94 msgpack bytes",
)

target(CROSSPROCESS, "p50_us", "autogen-grpc", at_least=4.0, text="RPC p50 <= 0.25x the AutoGen gRPC runtime's")
target(
    CROSSPROCESS,
    "p50_us",
    "zmq-asyncio",
    at_least=1 / 1.3,
    text="RPC p50 <= 1.3x raw asyncio DEALER/ROUTER request/reply p50 (ratio >= 0.77)",
)
target(
    CROSSPROCESS,
    "p99_us",
    "zmq-asyncio",
    at_least=1 / 3,
    text="RPC p99 <= 3x raw asyncio DEALER/ROUTER p99 (ratio >= 0.33)",
)
target(CROSSPROCESS, "per_s", "autogen-grpc", at_least=10.0, text="64-concurrent RPC >= 10x the AutoGen gRPC runtime")
target(CROSSPROCESS, "per_s", "autogen-grpc", at_least=20.0, text="(stretch) 64-concurrent RPC >= 20x AutoGen gRPC")


def _measure(caller: Child, n: int) -> dict[str, float]:
    caller.send("go", n=n, warmup=max(100, n // 10), concurrency=CONCURRENCY)
    done = caller.expect("done", BASE_TIMEOUT_S + 2.2 * n / SLOWEST_CALLS_PER_S)
    return {key: float(done[key]) for key in ("p50_us", "p99_us", "per_s")}


def run_mesh(n: int, *, secret_key_file: str | None = None) -> dict[str, float]:
    """agentmesh processes; with ``secret_key_file`` (one shared mesh key) every link is CURVE."""
    common = {"mesh": f"bench-{uuid.uuid4().hex[:8]}", "secret_key_file": secret_key_file}
    with Children() as kids:
        echo = kids.spawn("mesh.echo", **common)
        caller = kids.prespawn("mesh.caller", **common)
        caller.send("config", seed=echo.expect("ready", READY_TIMEOUT_S)["address"])
        caller.expect("ready", READY_TIMEOUT_S)
        return _measure(caller, n)


@CROSSPROCESS.system("agentmesh", "agentmesh, 2 processes", ours=True)
def rpc_mesh(run: RunContext) -> dict[str, float]:
    return run_mesh(run.n)


@CROSSPROCESS.system("autogen-grpc", "AutoGen gRPC host + 2 workers, 3 processes")
def rpc_autogen(run: RunContext) -> dict[str, float]:
    with Children() as kids:
        host = kids.spawn("autogen.host")
        echo = kids.prespawn("autogen.echo")
        caller = kids.prespawn("autogen.caller")
        address = host.expect("ready", READY_TIMEOUT_S)["address"]
        for child in (echo, caller):
            child.send("config", host=address)
        expect_all([echo, caller], "ready", READY_TIMEOUT_S)
        return _measure(caller, run.n)


def _rpc_zmq(mode: str, n: int) -> dict[str, float]:
    with Children() as kids:
        echo = kids.spawn("zmq.echo", mode=mode)
        caller = kids.prespawn("zmq.caller", mode=mode)
        caller.send("config", address=echo.expect("ready", READY_TIMEOUT_S)["address"])
        caller.expect("ready", READY_TIMEOUT_S)
        return _measure(caller, n)


@CROSSPROCESS.system("zmq-asyncio", "raw pyzmq asyncio DEALER/ROUTER, 2 processes")
def rpc_zmq_asyncio(run: RunContext) -> dict[str, float]:
    return _rpc_zmq("asyncio", run.n)


@CROSSPROCESS.system("zmq-blocking", "raw pyzmq blocking DEALER/ROUTER, 2 processes")
def rpc_zmq_blocking(run: RunContext) -> dict[str, float]:
    return _rpc_zmq("blocking", run.n)
