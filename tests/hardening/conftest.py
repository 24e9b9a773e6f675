"""Fixtures of the hardening tests: node processes that never outlive a test, clusters of them, and
diagnostics (node logs, counters) attached to the report of a test that fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from support.diagnostics import Diagnostics, diagnostics, node_procs, pytest_runtest_makereport
from support.hardening_cluster import Cluster
from support.procs import NodeProcesses

from mesh import MeshConfig

__all__ = ["diagnostics", "make_cluster", "node_procs", "pytest_runtest_makereport"]


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
