"""examples/pipeline.py: four stage processes in a loopback-only network namespace find each other
by mDNS; every reading flows sensor -> cleaning -> analysis -> display, out-of-range values are
clamped into 15-35 °C and 20-90 %, and the spikes are flagged as more than 2 sd from the mean.
Its pure parts (the analysis) are checked on their own too."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import pytest
from support.cli import Child, Children
from support.diagnostics import Diagnostics
from support.netns import NetnsUnavailable, Network, unavailable_reason

PIPELINE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.py"
READINGS = 17  # spikes at readings 6 and 16
# Stage start-up (interpreter, imports, mDNS discovery) and the readings' way through.
WAIT_S = 30.0


def load_pipeline() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pipeline_example", PIPELINE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pipeline_example"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_analysis_computes_the_trend_and_flags_values_beyond_two_sd() -> None:
    pipeline = load_pipeline()

    def window(*temperatures: float) -> list[object]:
        return [pipeline.Reading("s", i, t, 50.0, 0.0) for i, t in enumerate(temperatures)]

    assert pipeline.analyse(window(20.0)) == (0.0, [])
    trend, alerts = pipeline.analyse(window(20, 21, 22, 23, 24, 25))
    assert trend == pytest.approx(1.0) and alerts == []
    trend, alerts = pipeline.analyse(window(22, 22.1, 21.9, 22, 22.1, 21.9, 22, 22.1, 21.9, 35))
    assert alerts == ["temperature 35.0 °C is more than 2 sd from the mean 23.3 °C"]
    assert pipeline.analyse(window(22, 22.1, 21.9, 35))[1] == []  # fewer than 5 readings: no verdict yet


async def start_stage(children: Children, namespace: str, stage: str, peers: int, *extra: str) -> Child:
    args = [str(PIPELINE), stage, "--mesh", "pipeline-test", "--peers", str(peers), *extra]
    child = await children.start(stage, args, netns=namespace)
    assert (await child.line_matching(f"{stage} ready at ", WAIT_S)).startswith(f"{stage} ready at tcp://127.0.0.1:")
    return child


@pytest.mark.netns
async def test_the_four_stages_find_each_other_by_mdns_and_process_every_reading(
    tmp_path: Path, diagnostics: Diagnostics
) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    try:
        network = Network(1, loopback_only=True).create()
    except NetnsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        async with Children(tmp_path) as children:
            diagnostics("stage processes", children.logs)
            ns = network[0].name
            # From the display up: each stage waits for the stages further down, as on a LAN.
            display = await start_stage(children, ns, "display", 0)
            analysis = await start_stage(children, ns, "analysis", 1)
            cleaning = await start_stage(children, ns, "cleaning", 2)
            sensor = await start_stage(children, ns, "sensor", 3, "--readings", str(READINGS), "--interval", "0.02")
            await display.line_matching(f"display   #{READINGS - 1} ", WAIT_S)
            stages = {"sensor": sensor, "cleaning": cleaning, "analysis": analysis, "display": display}
            summaries = {}
            for name, stage in stages.items():
                assert await stage.terminate() == 0, stage.stderr()
                await stage.rest()
                summary = next(line for line in stage.lines if line.startswith(f"{name} summary "))
                summaries[name] = json.loads(summary.partition(" summary ")[2])
    finally:
        network.delete()

    assert {name: s["messages"] for name, s in summaries.items()} == dict.fromkeys(stages, READINGS)
    assert summaries["cleaning"]["clamped"] == 2 and summaries["display"]["alerts"] == 4
    assert 0 < summaries["display"]["latency_p50_ms"] <= summaries["display"]["latency_max_ms"]
    shown = [re.match(r"display   #(\d+) lab: ([\d.]+) °C (\d+) %", line) for line in display.lines]
    values = {int(m.group(1)): (float(m.group(2)), int(m.group(3))) for m in shown if m is not None}
    assert sorted(values) == list(range(READINGS))  # every reading, once
    assert all(15 <= t <= 35 and 20 <= h <= 90 for t, h in values.values())
    assert values[6] == values[16] == (35.0, 90)  # the spikes (40 °C, 97 %), clamped
    alerts = [line for line in display.lines if "ALERT" in line]
    assert [line.split()[1] for line in alerts] == ["#6", "#6", "#16", "#16"]
    assert "temperature 35.0 °C is more than 2 sd from the mean" in alerts[0]
    assert "humidity 90.0 % is more than 2 sd from the mean" in alerts[1]
    assert [line.split()[1] for line in cleaning.lines if line.startswith("cleaning  #")] == ["#6:", "#16:"]
