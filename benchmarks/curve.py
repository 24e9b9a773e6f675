"""CURVE on vs off: what encrypting and authenticating every link costs.

The cross-process publish and RPC workloads of ``publish.crossprocess`` and ``rpc.crossprocess``,
run by agentmesh twice in the same invocation: with CURVE (one shared mesh key, the key file
written by :func:`mesh._security.generate_keys` into a fresh temporary directory per repetition)
and without. The ratio to the plain mesh is the share of the plain figure that survives with
CURVE on (throughput: secured / plain; latency: plain / secured), so 0.9 means a 10 % cost.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mesh._security import generate_keys

from . import _oneway, rpc
from ._framework import Metric, RunContext, Workload, scenario
from ._workload import PAYLOAD_DESCRIPTION

ONE_SUBSCRIBER = _oneway.Layout.spread(1, 1)
SECURED = ("agentmesh-curve", "agentmesh with CURVE (shared mesh key), 2 processes")
PLAIN = ("agentmesh", "agentmesh without security, 2 processes")


def _key_file(directory: str) -> str:
    """One key pair shared by every node of the run (the shared-mesh-key model)."""
    _, secret = generate_keys(Path(directory), "mesh")
    return str(secret)


PUBLISH = scenario(
    "curve.publish",
    title="Publish across processes with CURVE on and off",
    description=(
        "publish.crossprocess's workload (A publishes n messages, one agent in B counts them; "
        "untimed warm-up of a tenth, at least 100) on agentmesh with every link CURVE-encrypted and "
        "authenticated, and on agentmesh without security, in the same run."
    ),
    metrics=(Metric("delivered_per_s", "delivered", "msg/s", better="higher"),),
    workload=Workload(quick=3_000, full=50_000),
    message=f"{PAYLOAD_DESCRIPTION}",
)


@PUBLISH.system(*SECURED, ours=True)
def publish_secured(run: RunContext) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-keys-") as keys:
        return {"delivered_per_s": _oneway.run_mesh(ONE_SUBSCRIBER, run.n, secret_key_file=_key_file(keys))}


@PUBLISH.system(*PLAIN)
def publish_plain(run: RunContext) -> dict[str, float]:
    return {"delivered_per_s": _oneway.run_mesh(ONE_SUBSCRIBER, run.n)}


RPC = scenario(
    "curve.rpc",
    title="RPC across processes with CURVE on and off",
    description=(
        "rpc.crossprocess's workload (n sequential calls timed one by one, then "
        f"{rpc.CONCURRENCY} concurrent callers sharing n more) on agentmesh with every link "
        "CURVE-encrypted and authenticated, and on agentmesh without security, in the same run."
    ),
    metrics=rpc.CROSSPROCESS.metrics,
    workload=Workload(quick=300, full=10_000, unit="calls per phase"),
    message=f"{PAYLOAD_DESCRIPTION}; reply Ack(seq: int)",
)


@RPC.system(*SECURED, ours=True)
def rpc_secured(run: RunContext) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-keys-") as keys:
        return rpc.run_mesh(run.n, secret_key_file=_key_file(keys))


@RPC.system(*PLAIN)
def rpc_plain(run: RunContext) -> dict[str, float]:
    return rpc.run_mesh(run.n)
