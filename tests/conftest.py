"""Shared test set-up: asyncio as the only backend, hypothesis profiles, and fast mesh timings."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# HYPOTHESIS_PROFILE=long for nightly-style runs; `make test` uses the quick one.
settings.register_profile(
    "quick", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.register_profile("long", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))


@pytest.fixture
def anyio_backend() -> str:
    # pyzmq's and zeroconf's async layers are asyncio-based: the node runs on asyncio only.
    return "asyncio"
