"""Fixtures of the interop tests: child processes that never outlive a test, mesh nodes with fast
timings, and the child logs attached to the report of a failing test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from interop.harness import Children
from support.diagnostics import Diagnostics, diagnostics, pytest_runtest_makereport

from mesh import MeshNode
from mesh.testing import FAST_CONFIG

__all__ = ["children", "diagnostics", "mesh_nodes", "pytest_runtest_makereport"]


@pytest.fixture
async def children(diagnostics: Diagnostics, tmp_path: Path) -> AsyncIterator[Children]:
    procs = Children(tmp_path)
    diagnostics("child process logs", procs.logs)
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
