"""Member records from peers (discovery/_record.py): the endpoint a record names is dialled by every
node that takes it, so anything but ``tcp://host:port[#key]`` is refused when the record is decoded."""

from __future__ import annotations

from typing import Any

import pytest
import zmq
from hypothesis import given
from hypothesis import strategies as st

from discovery import MemberRecord, RecordDecodeError, is_valid_endpoint

KEY = zmq.curve_keypair()[0].decode()

VALID = [
    "tcp://127.0.0.1:7400",
    "tcp://10.0.0.5:1",
    "tcp://[::1]:65535",
    "tcp://[fe80::1]:7400",
    "tcp://[::ffff:10.0.0.5]:7400",
    "tcp://localhost:7400",
    "tcp://node-a.lan:7400",
    "tcp://node_a.sim:1",
    f"tcp://10.0.0.5:7400#{KEY}",
    f"tcp://[::1]:7400#{KEY}",
]
INVALID: list[Any] = [
    "tcp://x",  # no port: ZeroMQ's connect raises
    "tcp://x:",
    "tcp://x:abc",
    "tcp://x:*",
    "tcp://x:-1",
    "tcp://x:0",
    "tcp://x:65536",
    "tcp://x:07400",
    "tcp://:7400",
    "tcp://::1:7400",  # IPv6 without brackets
    "tcp://[::1%lo]:7400",  # a scope id: not something a peer may name
    "tcp://[zz]:7400",
    "tcp://[10.0.0.5]:7400",
    "tcp://10.0.0.256:7400",
    "tcp://1.2.3:7400",
    "tcp://_x:7400",
    "tcp://-x:7400",
    "tcp://x-:7400",
    "tcp://x..y:7400",
    "tcp://x.:7400",
    "tcp://a b:7400",
    "tcp://" + "a" * 64 + ":7400",  # a DNS label is at most 63 characters
    "tcp://" + ".".join(["a" * 63] * 4) + ":7400",  # a DNS name at most 253
    "tcp://eth0;10.0.0.5:7400",  # ZeroMQ's source-address form
    "tcp://10.0.0.5:7400:1",
    "tcp://10.0.0.5:7400\n",
    "tcp://10.0.0.5:7400#",
    "tcp://10.0.0.5:7400#not-a-key",
    f"tcp://10.0.0.5:7400#{KEY}x",
    "TCP://10.0.0.5:7400",
    "udp://10.0.0.5:7400",
    "ipc:///tmp/mesh",
    "inproc://mesh",
    "",
    None,
    7400,
    b"tcp://10.0.0.5:7400",
]


@pytest.mark.parametrize("endpoint", VALID)
def test_well_formed_endpoints_are_valid(endpoint: str) -> None:
    assert is_valid_endpoint(endpoint)
    raw = MemberRecord("n1", 1, 0, endpoint, "n1", "m", (1, 0)).encode()
    assert MemberRecord.decode(raw).endpoint == endpoint


@pytest.mark.parametrize("endpoint", INVALID, ids=repr)
def test_a_record_naming_a_malformed_endpoint_is_refused(endpoint: Any) -> None:
    assert not is_valid_endpoint(endpoint)
    raw = ["n1", 1, 0, endpoint, "n1", "m", 1, 0, b""]
    with pytest.raises(RecordDecodeError, match="invalid endpoint"):
        MemberRecord.decode(raw)


# Loopback only: ZeroMQ starts dialling in the background as soon as connect returns.
hosts = (
    st.ip_addresses(network="127.0.0.0/8").map(str)
    | st.ip_addresses(network="::ffff:127.0.0.0/104").map(lambda a: f"[{a}]")
    | st.sampled_from(["[::1]", "[0:0:0:0:0:0:0:1]", "localhost"])  # localhost: from /etc/hosts
)
endpoints = st.builds(
    lambda host, port, key: f"tcp://{host}:{port}{key}",
    hosts,
    st.integers(-1, 70_000),
    st.sampled_from(["", f"#{KEY}", "#short", f"#{KEY[:-1]}\x00"]),
)


@given(endpoints)
def test_every_endpoint_held_valid_is_one_zeromq_can_dial(endpoint: str) -> None:
    if not is_valid_endpoint(endpoint):
        return
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IPV6, 1)
        sock.connect(endpoint.split("#", 1)[0])  # raises ZMQError for what it cannot parse


@given(st.text(max_size=80).map(lambda s: "tcp://" + s) | st.text(max_size=80))
def test_any_text_is_judged_without_error_and_only_tcp_host_port_passes(text: str) -> None:
    if not is_valid_endpoint(text):
        return
    address, _, key = text.partition("#")
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    assert text.startswith("tcp://") and host and port.isdigit() and 0 < int(port) < 65536, text
    assert key == "" or len(key) == 40, text
