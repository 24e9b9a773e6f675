"""``agentmesh watch`` and ``agentmesh top`` as on a LAN: no seeds, they find a running pipeline
(examples/pipeline.py, four processes) by mDNS. Everything runs inside a loopback-only network
namespace this test creates; the test process itself sends no multicast."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import ROOT, Child, Children
from support.diagnostics import Diagnostics
from support.netns import NetnsUnavailable, Network, unavailable_reason

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PIPELINE = ROOT / "examples" / "pipeline.py"
MESH = "cli-mdns"
# Stage start-up (interpreter, imports, mDNS discovery), generous for a loaded 2-core machine.
WAIT_S = 30.0


@pytest.fixture
def namespace() -> Iterator[str]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)
    try:
        network = Network(1, loopback_only=True).create()
    except NetnsUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield network[0].name
    finally:
        network.delete()


async def start_pipeline(children: Children, namespace: str) -> list[Child]:
    stages = []
    for stage, peers in (("display", 0), ("analysis", 1), ("cleaning", 2), ("sensor", 3)):
        args = [str(PIPELINE), stage, "--mesh", MESH, "--peers", str(peers), "--interval", "0.02"]
        child = await children.start(stage, args, netns=namespace)
        await child.line_matching(f"{stage} ready at ", WAIT_S)
        stages.append(child)
    return stages


async def test_watch_and_top_find_the_pipeline_by_mdns(
    tmp_path: Path, namespace: str, diagnostics: Diagnostics
) -> None:
    async with Children(tmp_path) as children:
        diagnostics("processes", children.logs)
        await start_pipeline(children, namespace)

        args = ["-m", "mesh", "watch", "analysis_results/lab", "--mesh", MESH, "--count", "3", "--json"]
        watch = await children.run("watch", args, netns=namespace, timeout_s=WAIT_S)
        assert watch.code == 0, watch
        records = [json.loads(line) for line in watch.stdout.splitlines()]
        assert len(records) == 3
        for record in records:
            assert (record["topic"], record["source"], record["sender"], record["type"]) == (
                "analysis_results", "lab", "analysis/lab", "Reading"
            )  # fmt: skip
            assert {"seq", "temperature", "humidity", "trend", "alerts"} <= set(record["content"])
        seqs = [r["content"]["seq"] for r in records]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3

        args = ["-m", "mesh", "top", "--once", "--json", "--mesh", MESH, "--interval", "1"]
        top = await children.run("top", args, netns=namespace, timeout_s=WAIT_S)
        assert top.code == 0, top
        rows = {row["name"]: row for row in json.loads(top.stdout)}
        assert set(rows) == {"sensor", "cleaning", "analysis", "display"}, rows
        assert {name: row["agent_types"] for name, row in rows.items()} == {
            "sensor": [], "cleaning": ["cleaning"], "analysis": ["analysis"], "display": ["display"]
        }  # fmt: skip
        assert rows["sensor"]["published_per_s"] > 0 and rows["sensor"]["handled_per_s"] == 0
        for stage in ("cleaning", "analysis", "display"):
            assert rows[stage]["handled_per_s"] > 0, rows[stage]
            assert (rows[stage]["agents"], rows[stage]["lost"], rows[stage]["bad_frames"]) == (1, 0, 0), rows[stage]
