"""Diagnostics attached to the report of a failing test (node logs, counters, namespaces), in setup
as well as in the test and teardown. A ``conftest.py`` enables them by importing the hook and the
fixtures::

    from support.diagnostics import diagnostics, node_procs, pytest_runtest_makereport
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path

import pytest
from support.procs import NodeProcesses

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
        # After teardown the node processes have stopped and logged their counters: refresh the
        # sections of the reports that failed earlier (pytest prints them at the end of the run).
        for failed_report in failed:
            _attach_diagnostics(item, failed_report)
    return report


def _attach_diagnostics(item: pytest.Item, report: pytest.TestReport) -> None:
    describers = item.stash.get(_DIAGNOSTICS, {})
    sections = [(title, text) for title, text in report.sections if title not in describers]
    for title, describe in describers.items():
        try:
            text = describe()
        except Exception as exc:  # a diagnostic must never hide the failure itself
            text = f"<{title} unavailable: {exc!r}>"
        sections.append((title, text))
    report.sections[:] = sections


@pytest.fixture
async def node_procs(diagnostics: Diagnostics, tmp_path: Path) -> AsyncIterator[NodeProcesses]:
    """Starts ``tests/support/node_main.py`` processes; stops and reaps every one at teardown."""
    async with NodeProcesses(tmp_path) as procs:
        diagnostics("node process logs", procs.logs)
        yield procs
