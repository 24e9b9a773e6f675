"""Restarting a node whose old port was taken while it was stopped (DESIGN §2: a stopped node can be
started again). Any local socket can end up on that port meanwhile, e.g. a connect that the kernel
gives it as its ephemeral port: a port picked for the node is replaced, a port the user named fails
loudly."""

from __future__ import annotations

import errno
import socket

import anyio
import pytest

from mesh import MeshNode

TIMEOUT_S = 10.0


async def _occupy(port: int) -> socket.socket:
    """Listen on ``port`` as soon as the stopped node's listener is gone (libzmq closes it in its
    I/O thread, a moment after stop() returns)."""
    with anyio.fail_after(TIMEOUT_S):
        while True:  # bounded by fail_after
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                sock.close()
                if exc.errno != errno.EADDRINUSE:
                    raise
                await anyio.sleep(0.01)
                continue
            sock.listen(1)
            return sock


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def test_a_picked_port_taken_while_stopped_is_replaced_and_peers_follow() -> None:
    a = MeshNode(name="a", discovery="none")
    b = MeshNode(name="b", discovery="none")
    with anyio.fail_after(TIMEOUT_S):
        await a.start()
        b._seeds = (a.address,)
        await b.start()
        await b.wait_for_peers(1, timeout=TIMEOUT_S)
        old = _port(a.address)
        await a.stop()
        squatter = await _occupy(old)
        try:
            await a.start()
            assert _port(a.address) != old
            b_id = b.node_id
            await a.stop()
            a._seeds = (b.address,)
            await a.start()
            await a.wait_for_peers(1, timeout=TIMEOUT_S)
            assert b_id in {p.node_id for p in a.peers}
        finally:
            squatter.close()
            await a.close()
            await b.close()


async def test_a_named_port_taken_while_stopped_fails_with_address_in_use() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = MeshNode(name="named", discovery="none", port=port)
    with anyio.fail_after(TIMEOUT_S):
        await node.start()
        assert _port(node.address) == port
        await node.stop()
        squatter = await _occupy(port)
        try:
            with pytest.raises(OSError) as raised:
                await node.start()
            assert raised.value.errno == errno.EADDRINUSE
            assert not node.running
        finally:
            squatter.close()
            await node.close()
