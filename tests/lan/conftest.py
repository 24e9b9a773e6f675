"""Fixtures of the LAN tests: network namespaces that are always deleted, node processes inside them
that never outlive a test, a random mesh name per test, and diagnostics on failure.

These tests need root and iproute2. Where namespaces cannot be built they FAIL with a one-line
reason: they never skip and never pass without having run.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from support.diagnostics import Diagnostics, diagnostics, node_procs, pytest_runtest_makereport
from support.lan import Lan
from support.netns import NetnsUnavailable, Network, unavailable_reason
from support.procs import NodeProcesses

__all__ = ["diagnostics", "lan", "make_network", "mesh_name", "node_procs", "pytest_runtest_makereport"]

MakeNetwork = Callable[..., Network]


@pytest.fixture(autouse=True)
def _namespaces_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)


@pytest.fixture
def mesh_name() -> str:
    """A mesh name of this test's own: parallel runs never meet."""
    return f"lan-{secrets.token_hex(4)}"


@pytest.fixture
def make_network(diagnostics: Diagnostics) -> Iterator[MakeNetwork]:
    """``make_network(n, ipv6=False, loopback_only=False)``: build namespaces, deleted at teardown
    (after the node processes, which are stopped first)."""
    networks: list[Network] = []

    def make(n: int, *, ipv6: bool = False, loopback_only: bool = False) -> Network:
        network = Network(n, ipv6=ipv6, loopback_only=loopback_only)
        networks.append(network)
        try:
            network.create()
        except NetnsUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        described: list[str] = []

        def describe() -> str:
            # Refreshed after teardown, when the namespaces are gone: keep what was seen before.
            text = network.describe()
            if text != "<no namespaces>" or not described:
                described[:] = [text]
            return described[0]

        diagnostics(f"network namespaces {network.prefix}*", describe)
        return network

    yield make
    errors = []
    for network in networks:
        try:
            network.delete()
        except Exception as exc:
            errors.append(str(exc))
    assert not errors, "; ".join(errors)


@pytest.fixture
async def lan(make_network: MakeNetwork, node_procs: NodeProcesses, mesh_name: str) -> AsyncIterator[Lan]:
    """Three namespaces on one bridge (10.77.0.1-3/24) for node processes of ``mesh_name``; the
    processes are stopped before the namespaces are deleted (fixture order)."""
    yield Lan(make_network(3), node_procs, mesh_name)
