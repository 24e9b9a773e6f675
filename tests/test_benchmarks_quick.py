"""The benchmark harness runs end to end in quick mode and writes well-formed results.

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
# Quick mode runs in seconds; the bound is for a slow, loaded 2-core machine, under pytest's own timeout.
RUN_TIMEOUT_S = 100.0
MIN_REPEAT = 3


def _positive_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_inprocess_run_writes_complete_results(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "inprocess", "--quick", "--out", str(tmp_path)],
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
    assert {s["name"] for s in scenarios} >= {"inprocess.publish", "inprocess.rpc"}
    for sc in scenarios:
        name = sc["name"]
        assert sc["error"] is None, name
        metric_keys = [m["key"] for m in sc["metrics"]]
        assert metric_keys, name
        assert all(m["better"] in ("higher", "lower") for m in sc["metrics"]), name
        ours = [s for s in sc["systems"] if s["ours"]]
        baselines = [s for s in sc["systems"] if not s["ours"]]
        assert len(ours) == 1 and ours[0]["name"] == sc["ours"], name
        assert baselines, f"{name} has no baseline"
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

    table = (tmp_path / "latest-quick.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for sc in scenarios:
        assert any(row.startswith(f"| {sc['name']} |") for row in rows), sc["name"]
    assert not list(tmp_path.glob("*.png")), "quick mode writes no plots unless asked"
