"""Payload translation and the bridge election, as plain calls (no processes)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from google.protobuf import any_pb2
from google.protobuf.wrappers_pb2 import StringValue
from interop.interop_messages import Ask

from mesh import AgentId, SerializationError, TopicId, UnknownPayload
from mesh._routing import NodeInfo, RoutingTable
from mesh.bridge import capability, elected
from mesh.bridge._protos import load
from mesh.bridge._proxy import host_of
from mesh.bridge._translate import body_from_event, body_of, error_text, event_from_body, sender_from_event

pytestmark = pytest.mark.interop

P = load()
TOPIC = TopicId("news", "s")


def test_json_bodies_cross_unchanged_both_ways() -> None:
    body = body_of(Ask("hi"), "test")
    assert body[:2] == ("Ask", "application/json") and json.loads(body[2]) == {"text": "hi"}
    event = event_from_body(P, body, TOPIC, AgentId("a", "k"), "id-1", extra={})
    assert event.binary_data == body[2] and event.WhichOneof("data") == "binary_data"
    assert body_from_event(P, event) == body
    assert sender_from_event(event) == AgentId("a", "k")


def test_protobuf_bodies_move_between_the_mesh_any_and_proto_data() -> None:
    body = body_of(StringValue(value="x"), "test")
    assert body[:2] == ("google.protobuf.StringValue", "application/x-protobuf")
    event = event_from_body(P, body, TOPIC, None, "id-2", extra={})
    assert event.WhichOneof("data") == "proto_data"
    unpacked = StringValue()
    assert event.proto_data.Unpack(unpacked) and unpacked.value == "x"
    assert body_from_event(P, event) == body
    # Without a dataschema attribute the type comes from the Any's type URL.
    del event.attributes["dataschema"]
    assert body_from_event(P, event) == body


def test_a_publish_without_sender_reads_back_as_none() -> None:
    event = event_from_body(P, body_of(Ask("x"), "t"), TOPIC, None, "id-3", extra={})
    assert sender_from_event(event) is None


def test_json_in_text_data_is_accepted() -> None:
    event = event_from_body(P, body_of(Ask("t"), "t"), TOPIC, None, "id-4", extra={})
    event.text_data = '{"text": "t"}'
    assert body_from_event(P, event) == ("Ask", "application/json", b'{"text": "t"}')


def test_unknown_payloads_pass_through_as_they_came() -> None:
    raw = UnknownPayload("Foreign", "application/json", b'{"a": 1}')
    assert body_of(raw, "t") == ("Foreign", "application/json", b'{"a": 1}')


@pytest.mark.parametrize("message", ["a str", 42, {"a": 1}, UnknownPayload("X", "application/x-msgpack", b"\x01")])
def test_what_autogen_cannot_decode_is_refused_with_the_fix(message: object) -> None:
    with pytest.raises(SerializationError, match="send a dataclass, a pydantic model or a protobuf message"):
        body_of(message, "call to a/b")


def test_events_autogen_cannot_describe_are_refused() -> None:
    event = event_from_body(P, body_of(Ask("x"), "t"), TOPIC, None, "id-5", extra={})
    event.attributes["datacontenttype"].ce_string = "text/plain"
    with pytest.raises(SerializationError, match="text/plain"):
        body_from_event(P, event)
    event.attributes["datacontenttype"].ce_string = "application/x-protobuf"
    with pytest.raises(SerializationError, match="no proto_data"):
        body_from_event(P, event)
    bad = P.ce.CloudEvent(id="x", type="t", source="s", proto_data=any_pb2.Any(type_url="x/y", value=b"\xff"))
    bad.attributes["datacontenttype"].ce_string = "application/x-protobuf"
    assert body_from_event(P, bad)[0] == "y"  # the bytes stay opaque: only the receiver decodes them


def test_error_texts_name_the_error() -> None:
    assert error_text(ValueError("boom")) == "ValueError: boom"
    assert error_text(TimeoutError()) == "TimeoutError"


def test_every_view_elects_the_same_capable_node() -> None:
    host = "10.0.0.5:50051"
    capable = NodeInfo(capabilities=frozenset({capability(host)}))
    other = NodeInfo(capabilities=frozenset({capability("10.0.0.6:50051")}))
    nodes = {f"n{i}": capable for i in range(5)} | {"x": other, "y": NodeInfo()}
    winner = elected(RoutingTable(nodes), host)
    assert winner in {f"n{i}" for i in range(5)}
    # Same view in another order: same winner; the winner gone: another capable node.
    assert elected(RoutingTable(dict(reversed(list(nodes.items())))), host) == winner
    survivors = {n: info for n, info in nodes.items() if n != winner}
    assert elected(RoutingTable(survivors), host) not in (None, winner)
    assert elected(RoutingTable({"x": other, "y": NodeInfo()}), host) is None


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("tcp://10.0.0.5:7400", "10.0.0.5"),
        ("tcp://[::1]:7400", "::1"),
        # A secured node's address names its z85 server key, which may hold ':' and ']'.
        ("tcp://127.0.0.1:49119#+XCN8-+<GbX]/.EP)$#()ka8ZbJ-OrBKRd:", "127.0.0.1"),
    ],
)
def test_the_proxy_node_binds_the_host_of_its_node_s_address(address: str, host: str) -> None:
    assert host_of(address) == host


def test_importing_the_bridge_imports_neither_grpc_nor_autogen() -> None:
    code = (
        "import sys, mesh, mesh.bridge\n"
        "assert not {'grpc', 'autogen_core', 'autogen_ext'} & set(sys.modules), sorted(sys.modules)\n"
        "assert all(hasattr(mesh.bridge, name) for name in mesh.bridge.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
