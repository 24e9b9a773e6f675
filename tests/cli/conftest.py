"""Fixtures of the CLI tests: ``agentmesh`` processes that never outlive a test (their output is
attached to the report of a failing test), and nodes in the test process for them to meet."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import Children
from support.diagnostics import Diagnostics, diagnostics, pytest_runtest_makereport

from mesh import MeshNode
from mesh.testing import FAST_CONFIG

__all__ = ["children", "diagnostics", "nodes", "pytest_runtest_makereport"]


@pytest.fixture
async def children(tmp_path: Path, diagnostics: Diagnostics) -> AsyncIterator[Children]:
    async with Children(tmp_path) as procs:
        diagnostics("agentmesh processes", procs.logs)
        yield procs


@pytest.fixture
async def nodes() -> AsyncIterator[Callable[..., Any]]:
    """``await new_node(name, **options)``: a started node (discovery off, fast timings), closed at teardown."""
    started: list[MeshNode] = []

    async def new_node(name: str, **options: Any) -> MeshNode:
        node = MeshNode(name=name, discovery="none", config=FAST_CONFIG, **options)
        started.append(node)
        await node.start()
        return node

    try:
        yield new_node
    finally:
        for node in reversed(started):
            await node.close()
