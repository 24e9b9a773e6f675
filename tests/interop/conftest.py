"""Fixtures of the interop tests: child processes that never outlive a test, mesh nodes with fast
timings, and the child logs attached to the report of a failing test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest
from interop.harness import Children

from mesh import MeshNode
from mesh.testing import FAST_CONFIG

_LOGS = pytest.StashKey[Callable[[], str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    describe = item.stash.get(_LOGS, None)
    if report.failed and describe is not None:
        try:
            report.sections.append(("child process logs", describe()))
        except Exception as exc:  # diagnostics must never hide the failure itself
            report.sections.append(("child process logs", f"<unavailable: {exc!r}>"))
    return report


@pytest.fixture
async def children(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Children]:
    procs = Children(tmp_path)
    request.node.stash[_LOGS] = procs.logs
    try:
        yield procs
    finally:
        await procs.aclose()


@pytest.fixture
async def mesh_nodes() -> AsyncIterator[Callable[..., Any]]:
    """``await new_node(name, seeds=...)``: a started node with fast timings, stopped at teardown."""
    nodes: list[MeshNode] = []

    async def new_node(name: str, seeds: Sequence[str] = ()) -> MeshNode:
        node = MeshNode(name=name, discovery="none", seeds=list(seeds), config=FAST_CONFIG)
        nodes.append(node)
        await node.start()
        return node

    try:
        yield new_node
    finally:
        for node in reversed(nodes):
            await node.close()
