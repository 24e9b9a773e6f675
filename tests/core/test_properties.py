"""Property tests of the pure core: subscription matching and mapping (against a plain reference and
autogen_core's classes), the routing table's recipients, and the message codec (DESIGN §3, §6)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import autogen_core
import autogen_core.exceptions
import msgpack
import pydantic
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import mesh
from mesh._routing import NodeInfo, RoutingTable, SubInfo
from mesh._serialization import (
    MSGPACK_DATA_CONTENT_TYPE,
    NATIVE_TYPES,
    PayloadDecodeError,
    SerializerRegistry,
)

JSON = mesh.JSON_DATA_CONTENT_TYPE
MSGPACK = MSGPACK_DATA_CONTENT_TYPE

# -- reference model ------------------------------------------------------------------------------


def reference_match(kind: str, pattern: str, topic_type: str) -> bool:
    """AutoGen's rule, written out: a type subscription matches equal topic types, a prefix one any
    topic type that starts with the prefix."""
    if kind == "type":
        return topic_type == pattern
    return topic_type[: len(pattern)] == pattern


def reference_recipients(subs: list[tuple[str, str, str]], topic_type: str, source: str) -> Counter[tuple[str, str]]:
    """Every distinct subscription (by AutoGen's equality) that matches delivers once, keyed by source."""
    distinct = set(subs)
    return Counter((agent, source) for kind, pattern, agent in distinct if reference_match(kind, pattern, topic_type))


# Small alphabets so that matches, near-misses and shared prefixes are common.
topic_types = st.text(alphabet="ab:=.-_", min_size=1, max_size=5)
prefixes = st.text(alphabet="ab:=.-_", max_size=4)
agent_types = st.text(alphabet="xy_.-", min_size=1, max_size=3)
sources = st.text(max_size=6)
kinds = st.sampled_from(["type", "prefix"])


def make_subscription(module: Any, kind: str, pattern: str, agent_type: str, sub_id: str | None = None) -> Any:
    if kind == "type":
        return module.TypeSubscription(pattern, agent_type, id=sub_id)
    return module.TypePrefixSubscription(pattern, agent_type, id=sub_id)


# -- subscriptions --------------------------------------------------------------------------------


@given(kinds, prefixes, agent_types, topic_types, sources)
@example("prefix", "", "x", "a", "s")  # the empty prefix matches every topic
@example("type", "a:", "x", "a", "s")
@example("prefix", "a:", "x", "a", "s")
def test_subscription_matching_and_mapping(
    kind: str, pattern: str, agent_type: str, topic_type: str, source: str
) -> None:
    if kind == "type" and not pattern:
        pattern = "a"  # a TypeSubscription's topic type is a valid (non-empty) topic type
    expected = reference_match(kind, pattern, topic_type)
    ours = make_subscription(mesh, kind, pattern, agent_type)
    theirs = make_subscription(autogen_core, kind, pattern, agent_type)
    our_topic, their_topic = mesh.TopicId(topic_type, source), autogen_core.TopicId(topic_type, source)
    assert ours.is_match(our_topic) is expected
    assert theirs.is_match(their_topic) is expected
    if expected:
        assert ours.map_to_agent(our_topic) == mesh.AgentId(agent_type, source)
        assert theirs.map_to_agent(their_topic) == autogen_core.AgentId(agent_type, source)
    else:
        with pytest.raises(mesh.CantHandleException):
            ours.map_to_agent(our_topic)
        with pytest.raises(autogen_core.exceptions.CantHandleException):
            theirs.map_to_agent(their_topic)


@given(
    kinds,
    kinds,
    prefixes,
    prefixes,
    agent_types,
    agent_types,
    st.sampled_from(["id1", "id2", None]),
    st.sampled_from(["id1", "id2", None]),
)
def test_subscription_equality_matches_autogen(
    kind1: str, kind2: str, p1: str, p2: str, a1: str, a2: str, id1: str | None, id2: str | None
) -> None:
    """AutoGen's equality: same kind, and the same id or the same agent type and topic (prefix)."""
    expected = kind1 == kind2 and ((id1 is not None and id1 == id2) or (a1 == a2 and p1 == p2))
    ours = make_subscription(mesh, kind1, p1, a1, id1) == make_subscription(mesh, kind2, p2, a2, id2)
    theirs = make_subscription(autogen_core, kind1, p1, a1, id1) == make_subscription(autogen_core, kind2, p2, a2, id2)
    assert ours is expected
    assert theirs is expected


subscription_lists = st.lists(st.tuples(kinds, prefixes, agent_types), max_size=8).map(
    lambda subs: [(k, p if (p or k == "prefix") else "a", a) for k, p, a in subs]
)


@given(subscription_lists, topic_types, sources, st.integers(min_value=1, max_value=3))
def test_routing_table_recipients_match_reference(
    subs: list[tuple[str, str, str]], topic_type: str, source: str, holders: int
) -> None:
    """The table the node routes publishes with: every distinct matching subscription delivers once,
    however many nodes hold it, and agrees with autogen_core's subscription classes."""
    nodes = {
        f"node{n}": NodeInfo(subscriptions=tuple(SubInfo(k, p, a, f"{n}-{i}") for i, (k, p, a) in enumerate(subs)))
        for n in range(holders)
    }
    table = RoutingTable(nodes)
    ours = Counter((agent_id.type, agent_id.key) for agent_id in table.recipients(topic_type, source))
    assert ours == reference_recipients(subs, topic_type, source)
    topic = autogen_core.TopicId(topic_type, source)
    theirs = Counter(
        (s.map_to_agent(topic).type, s.map_to_agent(topic).key)
        for s in (make_subscription(autogen_core, k, p, a) for k, p, a in set(subs))
        if s.is_match(topic)
    )
    assert ours == theirs
    # Asking again (the cached path) gives the same answer.
    assert Counter((a.type, a.key) for a in table.recipients(topic_type, source)) == ours


# -- codec: round trips ---------------------------------------------------------------------------

FIELD_KINDS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    "str": (str, st.text()),
    "int": (int, st.integers()),
    "float": (float, st.floats(allow_nan=False)),
    "bool": (bool, st.booleans()),
    "list_int": (list[int], st.lists(st.integers(), max_size=5)),
    "dict_str_int": (dict[str, int], st.dictionaries(st.text(max_size=5), st.integers(), max_size=5)),
}


@st.composite
def generated_dataclasses(draw: st.DrawFn) -> tuple[type[Any], Any, bool]:
    """A dataclass with a generated schema (optional fields may hold None) and an instance of it."""
    schema = draw(st.lists(st.tuples(st.sampled_from(sorted(FIELD_KINDS)), st.booleans()), max_size=6))
    fields: list[tuple[str, Any]] = []
    values: dict[str, Any] = {}
    for i, (kind, optional) in enumerate(schema):
        tp, values_strategy = FIELD_KINDS[kind]
        name = f"f{i}_{kind}"
        fields.append((name, tp | None if optional else tp))
        values[name] = draw(st.none() | values_strategy if optional else values_strategy)
    cls = dataclasses.make_dataclass("Generated", fields)
    has_optional = any(optional for _, optional in schema)
    return cls, cls(**values), has_optional


@given(generated_dataclasses())
def test_dataclass_round_trip(generated: tuple[type[Any], Any, bool]) -> None:
    cls, message, has_optional = generated
    sender, receiver = SerializerRegistry(), SerializerRegistry()
    type_name, content_type, payload = sender.encode(message)
    assert (type_name, content_type) == ("Generated", JSON)
    receiver.learn_type(cls)
    decoded = receiver.decode(type_name, content_type, payload)
    assert type(decoded) is cls
    assert decoded == message
    if not has_optional:
        # AutoGen's own serializer (no unions) writes the same JSON values and reads ours, and we
        # read its (whitespace may differ: ours is compact where orjson writes it).
        theirs = autogen_core.try_get_known_serializers_for_type(cls)[0]
        assert json.loads(theirs.serialize(message)) == json.loads(payload)
        assert theirs.deserialize(payload) == message
        assert receiver.decode(type_name, content_type, theirs.serialize(message)) == message


@dataclasses.dataclass
class Inner:
    name: str
    score: float


@dataclasses.dataclass
class Outer:
    inner: Inner
    items: list[Inner]
    maybe: Inner | None
    counts: dict[str, int]


inners = st.builds(Inner, st.text(), st.floats(allow_nan=False))


@given(
    st.builds(
        Outer, inners, st.lists(inners, max_size=3), st.none() | inners, st.dictionaries(st.text(), st.integers())
    )
)
def test_nested_dataclass_round_trip(message: Outer) -> None:
    sender, receiver = SerializerRegistry(), SerializerRegistry()
    receiver.learn_type(Outer)
    decoded = receiver.decode(*sender.encode(message))
    assert decoded == message
    assert type(decoded.inner) is Inner


class Model(pydantic.BaseModel):
    name: str
    count: int
    ratio: float
    tags: list[str]
    extra: dict[str, int] | None = None
    inner: Inner | None = None


@given(
    st.builds(
        Model,
        name=st.text(),
        count=st.integers(),
        # pydantic writes infinities as null by default: finite floats only.
        ratio=st.floats(allow_nan=False, allow_infinity=False),
        tags=st.lists(st.text(), max_size=3),
        extra=st.none() | st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
        inner=st.none() | st.builds(Inner, st.text(), st.floats(allow_nan=False, allow_infinity=False)),
    )
)
def test_pydantic_round_trip(message: Model) -> None:
    sender, receiver = SerializerRegistry(), SerializerRegistry()
    type_name, content_type, payload = sender.encode(message)
    assert (type_name, content_type) == ("Model", JSON)
    receiver.learn_type(Model)
    assert receiver.decode(type_name, content_type, payload) == message
    theirs = autogen_core.try_get_known_serializers_for_type(Model)[0]
    assert theirs.deserialize(payload) == message


msgpack_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=16)
)
msgpack_values = st.recursive(
    msgpack_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=12,
)


@given(msgpack_values | st.tuples(msgpack_leaves, msgpack_leaves))
def test_msgpack_native_round_trip(value: Any) -> None:
    type_name, content_type, payload = SerializerRegistry().encode(value)
    assert (type_name, content_type) == (type(value).__name__, MSGPACK)
    decoded = SerializerRegistry().decode(type_name, content_type, payload)
    assert type(decoded) is type(value)
    assert decoded == value


# -- codec: hostile bytes and unknown names -------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int
    y: int


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "z"]), children),
    max_leaves=8,
)
hostile_payloads = (
    st.binary(max_size=64)
    | json_values.map(lambda v: json.dumps(v).encode())
    | msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True))
)
REGISTERED = {"Point": (Point, JSON), "Model": (Model, JSON), "dict": (dict, MSGPACK), "list": (list, MSGPACK)}


@given(st.sampled_from(sorted(REGISTERED)), hostile_payloads)
@example("Point", b"[" * 100_000)  # deep nesting: the JSON decoder's recursion limit
@example("Point", b'{"x": 1, "y": 2, "z": 3}')  # an unknown field
@example("Point", b"\xff\xfe\x00")
@example("dict", b"\x91" * 100_000)  # deep nesting in msgpack
@example("list", b"\xdd\xff\xff\xff\xff")  # a huge declared length with no data
def test_decoding_any_bytes_returns_an_instance_or_raises_payload_decode_error(name: str, payload: bytes) -> None:
    cls, content_type = REGISTERED[name]
    registry = SerializerRegistry()
    registry.learn_type(cls)
    try:
        decoded = registry.decode(name, content_type, payload)
    except PayloadDecodeError:
        return
    assert isinstance(decoded, cls)


@given(
    st.text(max_size=12), st.sampled_from([JSON, MSGPACK, mesh.PROTOBUF_DATA_CONTENT_TYPE, "text/plain"]), st.binary()
)
def test_unknown_type_names_give_unknown_payload(type_name: str, content_type: str, payload: bytes) -> None:
    registry = SerializerRegistry()
    registry.learn_type(Point)
    if type_name == "Point" or (content_type == MSGPACK and type_name in NATIVE_TYPES):
        type_name = "Unregistered" + type_name
    assert registry.decode(type_name, content_type, payload) == mesh.UnknownPayload(type_name, content_type, payload)


def _twin_dataclass() -> type[Any]:
    @dataclasses.dataclass
    class Twin:
        a: int

    return Twin


def _twin_other_dataclass() -> type[Any]:
    @dataclasses.dataclass
    class Twin:
        b: str

    return Twin


def _twin_model() -> type[Any]:
    class Twin(pydantic.BaseModel):
        c: int

    return Twin


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@pytest.mark.parametrize(
    ("first_factory", "second_factory"),
    [(_twin_dataclass, _twin_other_dataclass), (_twin_dataclass, _twin_model), (_twin_model, _twin_other_dataclass)],
)
def test_two_classes_with_one_name_are_reported_naming_both(first_factory: Any, second_factory: Any) -> None:
    first, second = first_factory(), second_factory()
    sample = {"a": 1, "b": "x", "c": 2}

    def instance(cls: type[Any]) -> Any:
        names = cls.model_fields if issubclass(cls, pydantic.BaseModel) else [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: sample[name] for name in names})

    registry = SerializerRegistry()
    type_name, content_type, payload = registry.encode(instance(first))
    assert type_name == "Twin"
    with pytest.raises(mesh.SerializationError) as exc_info:
        registry.encode(instance(second))
    message = str(exc_info.value)
    assert _qualified(first) in message
    assert _qualified(second) in message
    # The first class still owns the name.
    assert registry.decode(type_name, content_type, payload) == instance(first)
