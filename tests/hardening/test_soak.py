"""Soak, reduced to seconds (issue 8 part 5): three node processes, a mix of publishes and RPCs of
100 B to 256 KiB; every message delivered exactly once and in order per sender and key, every call
answered, nothing counted lost, and no traced-memory growth after warm-up on any node.

The driver is ``benchmarks/_soak_driver.py``; the full soak (1 000 000 publishes, 100 000 calls,
up to 1 MiB) runs from ``python -m benchmarks soak`` or ``python -m benchmarks._soak_driver --full``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks._soak_driver import QUICK, run_soak

pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_a_quick_soak_delivers_everything_exactly_once_without_memory_growth(
    tmp_path: Path, record_property: Any
) -> None:
    result = run_soak(QUICK, tmp_path)
    summary = result.summary()
    record_property("soak", summary)
    print("soak:", json.dumps(summary))
    assert result.published == QUICK.publishes and result.rpcs_answered == QUICK.rpcs
    assert result.problems() == [], json.dumps(summary, indent=2)
