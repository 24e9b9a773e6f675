"""Soak: three mesh node processes under a mix of publishes and RPCs (100 B up to 1 MiB), checked for
exactly-once delivery, every call answered, and no memory growth after warm-up.

Ours only: the figures are throughput over the whole run (drains between phases included), the
peak traced Python memory of the busiest node, and its traced memory at the end relative to right
after the warm-up phase. A run that loses, duplicates or reorders a message, leaves a call
unanswered, or grows beyond the band fails. The driver is ``benchmarks/_soak_driver.py`` (also
runnable alone, once: ``python -m benchmarks._soak_driver --full``).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from ._framework import BenchmarkError, Metric, RunContext, Workload, scenario, target
from ._soak_driver import FULL, MIB, QUICK, run_soak

MIXED = scenario(
    "soak.mixed",
    title="Soak: 3 processes, publishes and RPCs of 100 B to 1 MiB, exactly once, no memory growth",
    description=(
        "Three node processes each publish their share of n messages (sizes: 80% 100 B-1 KiB, 15% "
        "to 16 KiB, 4% to 128 KiB, 1% to the maximum; a warm-up burst at the maximum) to 48 keys and "
        "make their share of n/10 calls with 16 concurrent callers, in 10 phases; between phases "
        "the mesh drains and every node samples its traced memory (tracemalloc, after gc). The "
        "first phase is the warm-up. Every delivery is checked against per-publisher bitmaps."
    ),
    metrics=(
        Metric("publishes_per_s", "publishes", "msg/s", better="higher"),
        Metric("rpcs_per_s", "calls", "calls/s", better="higher"),
        Metric("peak_traced_mib", "peak traced memory (busiest node)", "MiB", better="lower"),
        Metric("end_vs_warm", "traced memory at the end / after warm-up (worst node)", "x", better="lower"),
    ),
    workload=Workload(quick=QUICK.publishes, full=FULL.publishes, unit="publishes (and a tenth as many calls)"),
    message="msgpack [origin, seq, payload]; payload 100 B to 256 KiB (quick) or 1 MiB (full)",
    solo=True,
    plot=False,
)

target(MIXED, "end_vs_warm", None, at_most=1.05, text="no traced-memory growth after warm-up (<= 5%)")


@MIXED.system("agentmesh", "agentmesh, 3 node processes", ours=True)
def soak_mesh(run: RunContext) -> dict[str, float]:
    base = QUICK if run.mode == "quick" else FULL
    params = replace(base, publishes=run.n, rpcs=run.n // 10)
    with tempfile.TemporaryDirectory(prefix="agentmesh-soak-") as log_dir:
        result = run_soak(params, Path(log_dir), say_line=lambda line: None)
    problems = result.problems()
    if problems:
        raise BenchmarkError(f"soak failed: {'; '.join(problems)}")
    worst = max(m.traced[-1] / m.traced[0] for m in result.memory.values())
    return {
        "publishes_per_s": result.published / result.load_s,
        "rpcs_per_s": result.rpcs_answered / result.load_s,
        "peak_traced_mib": result.peak_traced / MIB,
        "end_vs_warm": worst,
    }
