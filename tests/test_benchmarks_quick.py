"""The benchmark harness runs every scenario group end to end in quick mode and writes
well-formed results: in-process, cross-process publish and RPC (agentmesh, AutoGen's gRPC runtime
and raw pyzmq in child processes), fan-out, scale (real nodes and the simulation), and CURVE on vs
off.

This asserts the structure of what is written, never speed: timing belongs in the benchmarks.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Quick mode of every group runs in about a minute; the bound is for a slow, loaded 2-core machine.
RUN_TIMEOUT_S = 170.0
MIN_REPEAT = 3
GROUPS = {"inprocess", "publish", "rpc", "fanout", "scale", "curve"}  # at least these (other groups may exist)
# Scenarios too slow for a smoke test: quick mode says it skipped them.
FULL_ONLY = {"fanout.subscribers_10", "scale.nodes_32", "scale.nodes_50", "scale.nodes_64"}


def _positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT_S + 20)
def test_quick_run_of_every_group_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"

    report = json.loads((tmp_path / "latest-quick.json").read_text(encoding="utf-8"))
    stamped = [p for p in tmp_path.glob("*-quick.json") if p.name != "latest-quick.json"]
    assert len(stamped) == 1
    assert report["mode"] == "quick"
    assert report["repeat"] >= MIN_REPEAT
    for key in ("cpu_model", "cpu_count", "python", "pyzmq", "libzmq", "autogen_core"):
        assert report["machine"][key], key
    assert report["date"]

    scenarios = report["scenarios"]
    names = {s["name"] for s in scenarios}
    assert {s["group"] for s in scenarios} >= GROUPS
    assert names >= {"inprocess.publish", "inprocess.rpc", "publish.crossprocess", "rpc.crossprocess"}
    assert names >= {"fanout.subscribers_1", "fanout.subscribers_100", "scale.nodes_2", "scale.nodes_8"}
    assert "scale.simulated" in names
    assert names >= {"curve.publish", "curve.rpc"}
    assert not names & FULL_ONLY
    for name in FULL_ONLY:
        assert f"{name} | skipped in quick mode" in proc.stdout, name
    for sc in scenarios:
        name = sc["name"]
        assert sc["error"] is None, name
        metric_keys = [m["key"] for m in sc["metrics"]]
        assert metric_keys, name
        assert all(m["better"] in ("higher", "lower") for m in sc["metrics"]), name
        ours = [s for s in sc["systems"] if s["ours"]]
        baselines = [s for s in sc["systems"] if not s["ours"]]
        assert len(ours) == 1 and ours[0]["name"] == sc["ours"], name
        assert baselines or sc["solo"], f"{name} has no baseline and is not declared solo"
        for system in sc["systems"]:
            assert len(system["runs"]) >= MIN_REPEAT, (name, system["name"])
            for key in metric_keys:
                assert all(_positive_finite(run[key]) for run in system["runs"]), (name, system["name"], key)
                summary = system["summary"][key]
                assert _positive_finite(summary["median"]), (name, system["name"], key)
                assert summary["min"] <= summary["median"] <= summary["max"], (name, system["name"], key)
        assert set(sc["ratios"]) == {b["name"] for b in baselines}, name
        for baseline in baselines:
            for key in metric_keys:
                assert _positive_finite(sc["ratios"][baseline["name"]][key]), (name, baseline["name"], key)
        for t in sc["targets"]:
            assert t["metric"] in metric_keys and t["bound"], (name, t)
            assert t["baseline"] is None or t["baseline"] in sc["ratios"], (name, t)
            assert _positive_finite(t["value"]), (name, t)
            assert t["met"] in (True, False) or t["note"] == "full mode only", (name, t)
    assert any(sc["targets"] for sc in scenarios)

    table = (tmp_path / "latest-quick.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for sc in scenarios:
        assert any(row.startswith(f"| {sc['name']} |") for row in rows), sc["name"]
    assert "## Targets" in table
    assert not list(tmp_path.glob("*.png")), "quick mode writes no plots unless asked"
