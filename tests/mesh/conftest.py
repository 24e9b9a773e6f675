"""Fixtures of the mesh tests: node processes that never outlive a test, and diagnostics (node
logs, counters) attached to the report of a test that fails, in setup as well as in the test."""

from __future__ import annotations

from support.diagnostics import Diagnostics, diagnostics, node_procs, pytest_runtest_makereport

__all__ = ["Diagnostics", "diagnostics", "node_procs", "pytest_runtest_makereport"]
