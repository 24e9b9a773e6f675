"""Fan-out: one publish reaches 1, 10 or 100 subscribers spread over three processes.

Every subscriber is an agent type of its own with a TypeSubscription to the topic, dealt
round-robin over three subscriber processes; the publisher is a fourth process with no agents.
Ours: four MeshNode processes. Baseline: AutoGen's gRPC runtime, the host plus four workers (five
processes); its host forwards a publish once per worker that holds subscribers, as the mesh
sends it once per node.
"""

from __future__ import annotations

from . import _oneway
from ._framework import Metric, RunContext, Scenario, Workload, scenario
from ._workload import PAYLOAD_DESCRIPTION

PROCESSES = 3


def _fanout(subscribers: int, workload: Workload, *, in_quick: bool = True) -> Scenario:
    layout = _oneway.Layout.spread(subscribers, PROCESSES)
    sc = scenario(
        f"fanout.subscribers_{subscribers}",
        title=f"Fan-out of a publish to {subscribers} subscriber{'s' if subscribers > 1 else ''} over 3 processes",
        description=(
            f"A publisher process publishes n messages to one topic; {subscribers} "
            f"agent{' subscribes' if subscribers == 1 else 's subscribe'} to it, dealt over {PROCESSES} "
            f"subscriber processes ({', '.join(str(len(t)) for t in layout.sinks)}). "
            "After an untimed warm-up of a tenth as many publishes (at least 100), the clock runs "
            "from the first publish to the last subscriber process seeing its last message; "
            f"delivered = n x {subscribers} deliveries / s."
        ),
        metrics=(Metric("delivered_per_s", "deliveries", "msg/s", better="higher"),),
        workload=workload,
        message=f"{PAYLOAD_DESCRIPTION}; n counts publishes",
        in_quick=in_quick,
    )

    @sc.system("agentmesh", "agentmesh, 4 processes", ours=True)
    def fanout_mesh(run: RunContext) -> dict[str, float]:
        return {"delivered_per_s": _oneway.run_mesh(layout, run.n)}

    @sc.system("autogen-grpc", "AutoGen gRPC host + 4 workers, 5 processes")
    def fanout_autogen(run: RunContext) -> dict[str, float]:
        return {"delivered_per_s": _oneway.run_autogen(layout, run.n)}

    return sc


SUBSCRIBERS_1 = _fanout(1, Workload(quick=1_000, full=30_000, unit="publishes"))
# --quick skips the middle size: 1 and 100 exercise the same code, and CI time is short.
SUBSCRIBERS_10 = _fanout(10, Workload(quick=300, full=10_000, unit="publishes"), in_quick=False)
SUBSCRIBERS_100 = _fanout(100, Workload(quick=100, full=2_000, unit="publishes"))
