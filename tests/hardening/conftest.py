"""Fixtures of the hardening tests: node processes that never outlive a test, and diagnostics (node
logs, counters) attached to the report of a test that fails, in setup as well as in the test.

The same diagnostics as tests/mesh/conftest.py (a conftest cannot be imported from another test
directory; the hook only sees the items of this directory)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import pytest
from support.hardening_cluster import Cluster
from support.procs import NodeProcesses

from mesh import MeshConfig

_DIAGNOSTICS = pytest.StashKey[dict[str, Callable[[], str]]]()
_FAILED_REPORTS = pytest.StashKey[list[pytest.TestReport]]()
Diagnostics = Callable[[str, Callable[[], str]], None]


@pytest.fixture
def diagnostics(request: pytest.FixtureRequest) -> Diagnostics:
    """``diagnostics(title, describe)``: show ``describe()`` under ``title`` in the report if the test
    fails (in setup, call or teardown)."""

    def add(title: str, describe: Callable[[], str]) -> None:
        request.node.stash.setdefault(_DIAGNOSTICS, {})[title] = describe

    return add


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    failed = item.stash.setdefault(_FAILED_REPORTS, [])
    if report.failed:
        failed.append(report)
    if report.failed or (report.when == "teardown" and failed):
        # After teardown the node processes have stopped and logged their counters.
        for failed_report in failed:
            describers = item.stash.get(_DIAGNOSTICS, {})
            sections = [(title, text) for title, text in failed_report.sections if title not in describers]
            for title, describe in describers.items():
                try:
                    text = describe()
                except Exception as exc:  # a diagnostic must never hide the failure itself
                    text = f"<{title} unavailable: {exc!r}>"
                sections.append((title, text))
            failed_report.sections[:] = sections
    return report


@pytest.fixture
async def node_procs(diagnostics: Diagnostics, tmp_path: Path) -> AsyncIterator[NodeProcesses]:
    """Starts ``tests/support/node_main.py`` processes; stops and reaps every one at teardown."""
    async with NodeProcesses(tmp_path) as procs:
        diagnostics("node process logs", procs.logs)
        yield procs


@pytest.fixture
async def make_cluster(
    diagnostics: Diagnostics, node_procs: NodeProcesses
) -> AsyncIterator[Callable[[MeshConfig], Cluster]]:
    """``make(config)``: a Cluster whose processes get ``config``; its client is closed after the test
    (before ``node_procs`` stops the processes)."""
    made: list[Cluster] = []

    def make(config: MeshConfig) -> Cluster:
        cluster = Cluster(node_procs, config)
        made.append(cluster)
        diagnostics(f"test process node ({len(made)})", cluster.describe)
        return cluster

    try:
        yield make
    finally:
        for cluster in made:
            await cluster.close_client()
