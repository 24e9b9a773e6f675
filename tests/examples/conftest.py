"""The examples' tests attach the output of the programs they run to the report of a failure."""

from __future__ import annotations

from support.diagnostics import diagnostics, pytest_runtest_makereport

__all__ = ["diagnostics", "pytest_runtest_makereport"]
