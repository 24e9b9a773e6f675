"""CURVE security (DESIGN §4): encryption and authentication with an allowlist, both key models,
no downgrade, spoofed endpoints refused, key rotation, and the warning for exposed nodes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

import mesh._node
from discovery._swim import JOIN
from mesh import (
    AgentId,
    MeshNode,
    MessageContext,
    RoutedAgent,
    SecurityConfigError,
    TopicId,
    TypeSubscription,
    UnknownAgentTypeError,
    rpc,
)
from mesh import _codec as wire
from mesh._security import generate_keys
from mesh._transport import routing_id
from mesh.testing import FAST_CONFIG, wait_for

# A node that cannot join gives up waiting for its seeds quickly.
CONFIG = replace(FAST_CONFIG, join_timeout_s=1.0)


@dataclass
class Ping:
    n: int


class Echo(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("echo")
        self.seen: list[int] = []

    @rpc
    async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
        self.seen.append(message.n)
        return message


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Key pairs for a, b, c and an intruder; a, b and c are in ``tmp_path/allowed``."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    pairs = {name: generate_keys(tmp_path / name, name) for name in ("a", "b", "c", "intruder")}
    for name in ("a", "b"):
        shutil.copy(pairs[name][0], allowed)
    return pairs


class Nodes:
    def __init__(self) -> None:
        self.nodes: list[MeshNode] = []

    async def start(self, **options: object) -> MeshNode:
        node = MeshNode(discovery="none", config=CONFIG, **options)  # type: ignore[arg-type]
        self.nodes.append(node)
        await node.start()
        return node


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    started = Nodes()
    try:
        yield started
    finally:
        for node in reversed(started.nodes):
            await node.stop()


async def test_per_node_keys_admit_the_allowlist_and_nobody_else(keys, tmp_path: Path, nodes: Nodes) -> None:
    allowed = tmp_path / "allowed"
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    assert a.address is not None and a.address.endswith("#" + str(a.public_key))
    await Echo.register(a, "echo", Echo)
    b = await nodes.start(name="b", seeds=[a.address], secret_key_file=keys["b"][1], authorized_keys_dir=allowed)
    await b.wait_for_peers(1, timeout=5)
    assert await b.send_message(Ping(1), AgentId("echo", "k")) == Ping(1)

    # The intruder knows a's endpoint and key, but its own key is not allowed: it cannot join...
    intruder = await nodes.start(
        name="intruder", seeds=[a.address], secret_key_file=keys["intruder"][1], authorized_keys_dir=allowed
    )
    assert intruder.peers == []
    assert {p.name for p in a.peers} == {"b"}
    # ...nor call or publish into the mesh.
    with pytest.raises(UnknownAgentTypeError):
        await intruder.send_message(Ping(2), AgentId("echo", "k"))
    await a.add_subscription(TypeSubscription("t", "echo"))
    await intruder.publish_message(Ping(3), TopicId("t", "k"))
    echo = await a.try_get_underlying_agent_instance(AgentId("echo", "k"), Echo)
    assert echo.seen == [1]


async def test_a_raw_curve_client_with_an_unknown_key_gets_nothing_through(keys, tmp_path: Path, nodes: Nodes) -> None:
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=tmp_path / "allowed")
    assert a.address is not None
    before = a.statistics()["frames_in"]
    public, secret = zmq.auth.load_certificate(keys["intruder"][1])
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED)
    try:
        sock.setsockopt(zmq.LINGER, 0)
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = str(a.public_key).encode()
        sock.connect(a.address.split("#")[0])
        await sock.send(b"AM" + bytes(11) + b"\x90")
        event = parse_monitor_message(await asyncio.wait_for(monitor.recv_multipart(), 5))
        assert event["event"] == zmq.EVENT_HANDSHAKE_FAILED_AUTH
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        ctx.term()
    assert a.statistics()["frames_in"] == before


async def test_an_unencrypted_peer_is_refused_no_downgrade(keys, tmp_path: Path, nodes: Nodes) -> None:
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=tmp_path / "allowed")
    plain = await nodes.start(name="plain", seeds=[a.address.split("#")[0]])
    assert plain.peers == []
    assert a.peers == []
    # And a secured node does not talk to a plain one either.
    b = await nodes.start(name="b", seeds=[plain.address], secret_key_file=keys["b"][1])
    assert b.peers == [] and plain.peers == []


async def test_one_shared_mesh_key(keys, nodes: Nodes) -> None:
    shared = keys["a"][1]
    a = await nodes.start(name="a", secret_key_file=shared)
    await Echo.register(a, "echo", Echo)
    # With one shared key, seeds need not name it.
    b = await nodes.start(name="b", seeds=[a.address.split("#")[0]], secret_key_file=shared)
    c = await nodes.start(name="c", seeds=[b.address], secret_key_file=shared)
    await c.wait_for_peers(2, timeout=5)
    assert await c.send_message(Ping(7), AgentId("echo", "k")) == Ping(7)
    other = await nodes.start(name="other", seeds=[a.address.split("#")[0]], secret_key_file=keys["b"][1])
    assert other.peers == []


async def test_an_endpoint_whose_key_is_not_allowed_is_never_contacted(keys, tmp_path: Path, nodes: Nodes) -> None:
    """A spoofed seed or announcement names a key outside the allowlist: no connection is made."""
    allowed = tmp_path / "allowed"
    intruder_key = zmq.auth.load_certificate(keys["intruder"][0])[0].decode()
    spoofed = f"tcp://127.0.0.1:9#{intruder_key}"
    # As a seed it is a configuration error...
    with pytest.raises(SecurityConfigError, match="not in the allowlist"):
        MeshNode(discovery="none", seeds=[spoofed], secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    with pytest.raises(SecurityConfigError, match="names no server key"):
        MeshNode(
            discovery="none", seeds=["tcp://127.0.0.1:9"], secret_key_file=keys["a"][1], authorized_keys_dir=allowed
        )
    # ...and heard of at run time (gossip, an mDNS announcement), it is refused and counted.
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    membership = a._link.membership
    assert membership is not None
    membership.contact(spoofed)
    assert a.statistics()["refused_endpoints"] == 1
    transport = a._link.transport
    assert transport is not None and not transport.has_link(spoofed)


async def test_a_new_key_is_admitted_after_reload(keys, tmp_path: Path, nodes: Nodes) -> None:
    """Rotation: add the new node's public key to the allowlist, reload, and it joins."""
    allowed = tmp_path / "allowed"
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    c_dir = tmp_path / "c-allowed"
    c_dir.mkdir()
    shutil.copy(keys["a"][0], c_dir)
    shutil.copy(keys["c"][0], allowed)
    a.reload_authorized_keys()
    c = await nodes.start(name="c", seeds=[a.address], secret_key_file=keys["c"][1], authorized_keys_dir=c_dir)
    await wait_for(lambda: bool(c.peers) and bool(a.peers), 5, "c joining a")


@pytest.fixture
def no_umask() -> Iterator[None]:
    """A umask of 0 for the test (process-wide; tests run one at a time): modes are the ones asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_keys_are_private_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_umask: None
) -> None:
    """The secret key file is created with mode 600, not made so by a chmod after it was written
    (which left it readable by others for a moment); a new key directory gets mode 700."""
    keys_dir = tmp_path / "new" / "keys"
    with monkeypatch.context() as patched:

        def no_chmod(*args: object, **kwargs: object) -> None:
            raise AssertionError("a key file was written with broader permissions, then chmod'ed")

        patched.setattr(os, "chmod", no_chmod)
        public, secret = generate_keys(keys_dir, "n")
    assert (_mode(keys_dir), _mode(secret), _mode(public)) == (0o700, 0o600, 0o644)
    assert sorted(p.name for p in keys_dir.iterdir()) == ["n.key", "n.key_secret"]  # no temporary file left
    public_key, secret_key = zmq.auth.load_certificate(secret)
    assert secret_key is not None and zmq.curve_public(secret_key) == public_key
    assert zmq.auth.load_certificate(public) == (public_key, None)

    # Replacing a pair (agentmesh keygen --force) in an existing directory: the directory keeps its
    # mode, the new secret file is private even where the old one was not.
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.close(os.open(shared / "n.key_secret", os.O_WRONLY | os.O_CREAT, 0o644))
    _, replaced = generate_keys(shared, "n")
    assert (_mode(shared), _mode(replaced)) == (0o755, 0o600)
    assert zmq.auth.load_certificate(replaced)[1] not in (None, secret_key)


def test_security_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(SecurityConfigError, match="does not exist"):
        MeshNode(discovery="none", secret_key_file=tmp_path / "missing")
    public, _ = generate_keys(tmp_path, "x")
    with pytest.raises(SecurityConfigError, match="only a public key"):
        MeshNode(discovery="none", secret_key_file=public)
    with pytest.raises(SecurityConfigError, match="no secret key file"):
        MeshNode(discovery="none", authorized_keys_dir=tmp_path)


def test_environment_variables_configure_security(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = generate_keys(tmp_path, "env")
    monkeypatch.setenv("AGENTMESH_SECRET_KEY_FILE", str(secret))
    node = MeshNode(discovery="none")
    assert node.public_key is not None


def test_binding_a_non_loopback_address_without_security_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(mesh._node, "_warned_insecure_bind", False)
    caplog.set_level(logging.WARNING, logger="mesh")
    exposed = MeshNode(discovery="none", host="0.0.0.0")
    exposed._warn_if_exposed()
    exposed._warn_if_exposed()
    warnings = [r for r in caplog.records if "without security" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    monkeypatch.setattr(mesh._node, "_warned_insecure_bind", False)
    MeshNode(discovery="none", host="127.0.0.1")._warn_if_exposed()
    _, secret = generate_keys(tmp_path, "s")
    MeshNode(discovery="none", host="0.0.0.0", secret_key_file=secret)._warn_if_exposed()
    assert not [r for r in caplog.records if "without security" in r.getMessage()]


async def test_withdrawing_a_key_cuts_an_admitted_node_off(keys, tmp_path: Path, nodes: Nodes) -> None:
    """ZeroMQ checks keys only when a connection opens: removing a node's key and reloading must
    still end its membership, and its attempts to come back are refused."""
    allowed = tmp_path / "allowed"
    a = await nodes.start(name="a", secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    await Echo.register(a, "echo", Echo)
    b = await nodes.start(name="b", seeds=[a.address], secret_key_file=keys["b"][1], authorized_keys_dir=allowed)
    await b.wait_for_peers(1, timeout=5)
    assert await b.send_message(Ping(1), AgentId("echo", "k")) == Ping(1)
    (allowed / "b.key").unlink()
    a.reload_authorized_keys()
    assert a.peers == []  # at once
    # a neither answers b nor connects to a key it no longer trusts: b's failure detector drops a,
    # and b's calls into the mesh end (nothing left to route to).
    await wait_for(lambda: b.peers == [], 10, "b dropping a")
    with pytest.raises(UnknownAgentTypeError):
        await b.send_message(Ping(2), AgentId("echo", "k"))
    assert a.peers == []  # b's frames on its open connection are refused: see the next test


async def test_a_withdrawn_key_gets_nothing_through_its_open_connection_ever(keys, tmp_path: Path) -> None:
    """After reload, frames on a connection that authenticated with a withdrawn key are refused
    one by one (by the connection's ZAP User-Id), also once the node has forgotten the withdrawn
    member (dead_retention_s): a JOIN sent then on the old connection must not readmit it."""
    allowed = tmp_path / "allowed"
    config = replace(CONFIG, membership=replace(CONFIG.membership, dead_retention_s=0.2))
    a = MeshNode(name="a", discovery="none", config=config, secret_key_file=keys["a"][1], authorized_keys_dir=allowed)
    await a.start()
    await Echo.register(a, "echo", Echo)
    public, secret = zmq.auth.load_certificate(keys["b"][1])
    context = zmq.asyncio.Context()
    sock = context.socket(zmq.DEALER)
    sock.curve_publickey, sock.curve_secretkey = public, secret
    assert a.public_key is not None
    sock.curve_serverkey = a.public_key.encode()
    incarnation = 1_000
    sock.setsockopt(zmq.ROUTING_ID, routing_id("bnode", incarnation))
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(a.address.split("#")[0])
    record = [
        "bnode", incarnation, 0, "tcp://127.0.0.1:1#" + public.decode(), "b", a._mesh_name,
        wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR, b"",
    ]  # fmt: skip

    async def join() -> None:
        header = wire.HEADER.pack(wire.MAGIC, wire.PROTOCOL_MAJOR, wire.PROTOCOL_MINOR, wire.CLS_HANDSHAKE, 0)
        await sock.send(header + msgpack.packb([[wire.MEMBER, [JOIN, record, False]]], use_bin_type=True))

    def members() -> list[str]:
        return [p.node_id for p in a.peers]

    try:
        await join()
        await wait_for(lambda: members() == ["bnode"], 5, "b joining with an allowed key")
        (allowed / "b.key").unlink()
        a.reload_authorized_keys()
        assert members() == []
        membership = a._link.membership
        assert membership is not None
        await wait_for(lambda: membership.record_of("bnode") is None, 10, "a forgetting the withdrawn member")
        refused = a.statistics()["bad_frames"]
        await join()
        await wait_for(lambda: a.statistics()["bad_frames"] > refused, 5, "a refusing the JOIN on the old connection")
        assert members() == []
        assert membership.record_of("bnode") is None
    finally:
        sock.close(0)
        context.term()
        await a.stop()
