"""The transport (mesh/_transport.py) and the node's checks of the endpoints it is given: an endpoint
ZeroMQ cannot dial is an unreachable peer, counted and logged, never an exception for the caller."""

from __future__ import annotations

import logging

import pytest

from mesh import MeshNode
from mesh import _codec as wire
from mesh.testing import LocalMesh


@pytest.mark.parametrize("endpoint", ["tcp://x", "tcp://x:abc", "tcp://a b:1", "udp://127.0.0.1:1"])
async def test_sending_to_an_endpoint_zeromq_cannot_dial_counts_it_and_goes_on(
    endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with LocalMesh(2) as mesh:
        a, b = mesh.nodes
        transport = a._link.transport
        assert transport is not None
        with caplog.at_level(logging.WARNING, logger="mesh"):
            for _ in range(3):
                transport.send(endpoint, 0, [wire.MEMBER, [1]], handshake=True)  # must not raise
        assert not transport.has_link(endpoint)
        assert a.statistics()["unreachable_endpoints"] == 3
        lines = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
        assert len(lines) == 1 and endpoint in lines[0]  # rate-limited
        assert b.node_id in {p.node_id for p in a.peers}


@pytest.mark.parametrize("seed", ["tcp://x", "tcp://127.0.0.1:0", "tcp://127.0.0.1:1#short", "ipc:///tmp/s"])
def test_a_malformed_seed_is_refused_with_the_expected_form(seed: str) -> None:
    with pytest.raises(ValueError, match=r"must be a ZeroMQ TCP endpoint such as tcp://10\.0\.0\.5:7400"):
        MeshNode(discovery="none", seeds=[seed])


def test_an_advertised_address_peers_cannot_dial_is_refused() -> None:
    with pytest.raises(ValueError, match="advertise='a b' must be a host name or an IP address"):
        MeshNode(discovery="none", advertise="a b")
    MeshNode(discovery="none", advertise="::1")  # an IPv6 address is written in brackets for it
