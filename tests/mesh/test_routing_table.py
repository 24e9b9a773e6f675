"""The routing table (DESIGN §2 "One agent type on several nodes") against a plain reference model:
subscriptions are mesh-global and de-duplicated by AutoGen's equality, factory types are placed by
HRW over the nodes hosting them, instances live where they were registered. Node metadata from
peers is hostile: decoding it succeeds or raises ValueError."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import msgpack
from hypothesis import example, given
from hypothesis import strategies as st

from mesh import AgentId
from mesh._placement import owner as hrw_owner
from mesh._routing import NodeInfo, RoutingTable, SubInfo, TypeInfo

AGENT_TYPES = ["alpha", "beta", "gamma.v2", "del-ta", "ünï"]
TOPICS = ["t", "t1", "t:x", "news=1", "alpha:", "alpha:k", "beta:"]

# -- the reference model ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mesh:
    """What the test generated: which node hosts what, in plain terms."""

    nodes: dict[str, NodeInfo]
    kinds: dict[str, str]  # agent type -> "factory" | "instance", the same on every node hosting it


def reference_recipients(mesh: Mesh, topic_type: str, source: str) -> Counter[AgentId]:
    """One delivery per distinct (kind, topic, agent type) subscription that matches, whoever holds it."""
    distinct = {s.key for info in mesh.nodes.values() for s in info.subscriptions}
    return Counter(
        AgentId(agent_type, source)
        for kind, topic, agent_type in distinct
        if (kind == "type" and topic == topic_type) or (kind == "prefix" and topic_type.startswith(topic))
    )


def reference_owner(mesh: Mesh, agent_type: str, key: str) -> str | None:
    for node_id, info in mesh.nodes.items():
        tinfo = info.types.get(agent_type)
        if tinfo is not None and tinfo.kind == "instance" and key in tinfo.keys:
            return node_id
    hosts = [n for n, info in mesh.nodes.items() if agent_type in info.types]
    return hrw_owner(hosts, agent_type, key) if hosts else None


# -- generated meshes -------------------------------------------------------------------------------

sub_ids = st.text(max_size=6)
subscriptions = st.tuples(
    st.sampled_from(["type", "prefix"]), st.sampled_from([*TOPICS, "", "t1x"]), st.sampled_from(AGENT_TYPES)
).filter(lambda s: s[0] == "prefix" or s[1] != "")


@st.composite
def meshes(draw: st.DrawFn) -> Mesh:
    node_ids = draw(st.lists(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True), min_size=1, max_size=6, unique=True))
    hosted = draw(st.lists(st.sampled_from(AGENT_TYPES), unique=True, max_size=4))
    kinds = {t: draw(st.sampled_from(["factory", "instance"])) for t in hosted}
    # Subscriptions drawn from a small pool so that several nodes often hold the same one.
    pool = draw(st.lists(subscriptions, min_size=1, max_size=8, unique=True))
    used_keys: set[tuple[str, str]] = set()
    nodes: dict[str, NodeInfo] = {}
    for node_id in node_ids:
        types: dict[str, TypeInfo] = {}
        for agent_type in draw(st.lists(st.sampled_from(hosted), unique=True)) if hosted else []:
            keys: frozenset[str] = frozenset()
            if kinds[agent_type] == "instance":
                # An instance key is registered on one node only.
                wanted = draw(st.sets(st.text(max_size=4), max_size=3))
                keys = frozenset(k for k in wanted if (agent_type, k) not in used_keys)
                used_keys.update((agent_type, k) for k in keys)
            types[agent_type] = TypeInfo(kinds[agent_type], f"mod.{agent_type}", keys)
        held = draw(st.lists(st.sampled_from(pool), unique=True, max_size=len(pool)))
        subs = tuple(SubInfo(kind, topic, agent_type, draw(sub_ids)) for kind, topic, agent_type in held)
        capabilities = frozenset(draw(st.sets(st.sampled_from(["bridge", "gpu"]))))
        nodes[node_id] = NodeInfo(types, subs, capabilities)
    return Mesh(nodes, kinds)


topic_types = st.sampled_from(TOPICS) | st.from_regex(r"[a-z0-9:=\.]{1,6}", fullmatch=True)


@given(meshes(), topic_types, st.text(max_size=6))
def test_recipients_are_one_per_distinct_matching_subscription(mesh: Mesh, topic_type: str, source: str) -> None:
    table = RoutingTable(mesh.nodes)
    expected = reference_recipients(mesh, topic_type, source)
    assert Counter(table.recipients(topic_type, source)) == expected
    assert Counter(table.recipients(topic_type, source)) == expected  # the cached answer too


@given(meshes())
def test_every_subscription_lists_all_its_holders(mesh: Mesh) -> None:
    table = RoutingTable(mesh.nodes)
    expected: dict[tuple[str, str, str], set[str]] = {}
    for node_id, info in mesh.nodes.items():
        for sub in info.subscriptions:
            expected.setdefault(sub.key, set()).add(node_id)
    assert dict(table.subscriptions()) == expected


@given(meshes(), st.text(max_size=4), st.data())
def test_owners_follow_registration_and_placement(mesh: Mesh, key: str, data: st.DataObject) -> None:
    table = RoutingTable(mesh.nodes)
    for agent_type in AGENT_TYPES:
        hosts = [n for n, info in mesh.nodes.items() if agent_type in info.types]
        assert table.has_type(agent_type) == bool(hosts)
        if not hosts:
            assert table.owner(agent_type, key) is None  # unknown type: nobody
        elif mesh.kinds[agent_type] == "factory":
            assert table.owner(agent_type, key) == hrw_owner(hosts, agent_type, key)
            assert table.owner(agent_type, key) == reference_owner(mesh, agent_type, key)
        for node_id in hosts:
            for instance_key in mesh.nodes[node_id].types[agent_type].keys:
                assert table.owner(agent_type, instance_key) == node_id  # exact, not hashed
    if mesh.nodes:
        # The table of a view with the same nodes in another order answers the same.
        order = data.draw(st.permutations(list(mesh.nodes)))
        shuffled = RoutingTable({n: mesh.nodes[n] for n in order})
        for agent_type in AGENT_TYPES:
            assert shuffled.owner(agent_type, key) == table.owner(agent_type, key)


def test_owner_of_a_factory_type_moves_only_off_a_node_that_left() -> None:
    info = NodeInfo({"alpha": TypeInfo("factory", "mod.A")})
    full = RoutingTable({f"n{i}": info for i in range(5)})
    without = RoutingTable({f"n{i}": info for i in range(5) if i != 2})
    keys = [f"k{i}" for i in range(300)]
    moved = [k for k in keys if full.owner("alpha", k) != without.owner("alpha", k)]
    assert moved and all(full.owner("alpha", k) == "n2" for k in moved)
    assert {full.owner("alpha", k) for k in keys} == {f"n{i}" for i in range(5)}


@given(meshes(), st.text(max_size=4), st.data())
def test_owner_skipping_nodes_is_the_owner_of_the_view_without_them(mesh: Mesh, key: str, data: st.DataObject) -> None:
    """A handover that its first choice refuses goes to the next node in the key's HRW ranking:
    the owner the view would name if the refusing nodes were gone."""
    skip = set(data.draw(st.lists(st.sampled_from(sorted(mesh.nodes)), unique=True))) if mesh.nodes else set()
    table = RoutingTable(mesh.nodes)
    without = RoutingTable({n: info for n, info in mesh.nodes.items() if n not in skip})
    for agent_type in AGENT_TYPES:
        assert table.owner_skipping(agent_type, key, set()) == table.owner(agent_type, key)
        if mesh.kinds.get(agent_type) != "instance":
            assert table.owner_skipping(agent_type, key, skip) == without.owner(agent_type, key)


# -- metadata encoding ------------------------------------------------------------------------------


@given(meshes())
def test_node_info_round_trips(mesh: Mesh) -> None:
    for info in mesh.nodes.values():
        assert NodeInfo.decode(info.encode()) == info


def test_empty_metadata_is_an_empty_node() -> None:
    assert NodeInfo.decode(b"") == NodeInfo()
    assert RoutingTable({"n": NodeInfo.decode(b"")}).recipients("t", "s") == []


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=16,
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "t": st.dictionaries(st.text(max_size=6), msgpack_values | st.lists(msgpack_values, min_size=3, max_size=3)),
        "s": st.lists(msgpack_values | st.lists(msgpack_values | st.sampled_from(["type", "prefix"]), max_size=5)),
        "c": msgpack_values,
    },
)


@given(st.binary(max_size=64) | msgpack_values.map(msgpack.packb) | shaped.map(msgpack.packb))
@example(msgpack.packb({"t": {"bad type!": ["factory", "fp", []]}}))
@example(msgpack.packb({"s": [["type", "bad topic!", "a", "id"]]}))
@example(msgpack.packb({"t": {"a": ["factory", "fp", [1]]}}))
@example(msgpack.packb({1: 2}))
@example(b"\x91" * 2000 + b"\xc0")
def test_metadata_from_a_peer_decodes_or_raises_value_error(data: bytes) -> None:
    try:
        info = NodeInfo.decode(data)
    except ValueError:
        return
    assert isinstance(info, NodeInfo)
    RoutingTable({"peer": info}).recipients("t", "s")  # and the table can use what was accepted
