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


@pytest.fixture(autouse=True)
def _no_mdns_in_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """mDNS is multicast: from the test process it would reach the real network (restricting
    zeroconf's interfaces is not enough). Tests that use it run their nodes inside network
    namespaces they create; here it must fail loudly instead."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "a test started mDNS in the pytest process: use discovery='none' with seeds, or run the "
            "node inside a network namespace (tests/support/netns.py)"
        )

    monkeypatch.setattr("discovery._mdns.AsyncZeroconf", refuse)


@pytest.fixture
def anyio_backend() -> str:
    # pyzmq's and zeroconf's async layers are asyncio-based: the node runs on asyncio only.
    return "asyncio"
