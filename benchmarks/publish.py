"""Cross-process publish: node A publishes, an agent on node B counts; delivered messages/s at B.

Ours: two MeshNode processes (A joins through B). Baselines: AutoGen's gRPC runtime (a host and
two workers, three processes) and raw pyzmq DEALER -> ROUTER one-way in two processes, blocking
and asyncio, which is what Python can move at most. Each repetition starts fresh processes.
"""

from __future__ import annotations

from . import _oneway
from ._framework import Metric, RunContext, Workload, scenario, target
from ._workload import PAYLOAD_DESCRIPTION

ONE_SUBSCRIBER = _oneway.Layout.spread(1, 1)

CROSSPROCESS = scenario(
    "publish.crossprocess",
    title="Publish across processes, one subscriber",
    description=(
        "Process A publishes n messages to a topic that one agent in process B subscribes to (for "
        "AutoGen, through the host in a third process; for raw pyzmq, bytes from a DEALER to a "
        "ROUTER, no agents). After an untimed warm-up of a tenth as many (at least 100), the clock "
        "runs from A's first publish to B's handler seeing the n-th message (CLOCK_MONOTONIC, "
        "shared by the processes)."
    ),
    metrics=(Metric("delivered_per_s", "delivered", "msg/s", better="higher"),),
    workload=Workload(quick=3_000, full=50_000),
    message=f"{PAYLOAD_DESCRIPTION}; raw pyzmq sends the 94 msgpack bytes as they are",
)

target(
    CROSSPROCESS,
    "delivered_per_s",
    "autogen-grpc",
    at_least=25.0,
    text="cross-process publish delivered >= 25x the AutoGen gRPC runtime (the issue calls it a stretch)",
)
target(
    CROSSPROCESS,
    "delivered_per_s",
    "zmq-blocking",
    at_least=0.27,
    text="the same bar against raw blocking pyzmq DEALER->ROUTER one-way: >= 27% of it",
)


@CROSSPROCESS.system("agentmesh", "agentmesh, 2 processes", ours=True)
def publish_mesh(run: RunContext) -> dict[str, float]:
    return {"delivered_per_s": _oneway.run_mesh(ONE_SUBSCRIBER, run.n)}


@CROSSPROCESS.system("autogen-grpc", "AutoGen gRPC host + 2 workers, 3 processes")
def publish_autogen(run: RunContext) -> dict[str, float]:
    return {"delivered_per_s": _oneway.run_autogen(ONE_SUBSCRIBER, run.n)}


@CROSSPROCESS.system("zmq-blocking", "raw pyzmq blocking DEALER->ROUTER, 2 processes")
def publish_zmq_blocking(run: RunContext) -> dict[str, float]:
    return {"delivered_per_s": _oneway.run_zmq("blocking", run.n)}


@CROSSPROCESS.system("zmq-asyncio", "raw pyzmq asyncio DEALER->ROUTER, 2 processes")
def publish_zmq_asyncio(run: RunContext) -> dict[str, float]:
    return {"delivered_per_s": _oneway.run_zmq("asyncio", run.n)}
