"""Rendezvous (HRW) placement of agent keys on nodes (DESIGN §2 "One agent type on several nodes",
§6): every node computes the same owner from the same view, keys spread evenly, and a change of
view moves only the keys it must."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from mesh._placement import owner, weight

node_ids = st.text(min_size=1, max_size=16)
views = st.lists(node_ids, min_size=1, max_size=12, unique=True)
agent_types = st.from_regex(r"[\w\-\.]{1,12}", fullmatch=True)
keys = st.text(max_size=16)
KEYS = [f"key-{i}" for i in range(1000)]


@given(views, agent_types, keys, st.randoms(use_true_random=False))
def test_every_node_computes_the_same_owner_from_the_same_view(
    view: list[str], agent_type: str, key: str, rnd: random.Random
) -> None:
    """The owner depends on the set of nodes only: not on their order or the iterable's type."""
    expected = owner(view, agent_type, key)
    assert expected in view
    shuffled = list(view)
    rnd.shuffle(shuffled)
    for nodes in (shuffled, tuple(reversed(view)), set(view), frozenset(view), dict.fromkeys(view), iter(view)):
        assert owner(nodes, agent_type, key) == expected
    assert owner((n for n in shuffled), agent_type, key) == expected
    # The owner is the node of highest weight (ties, never seen in practice, to the greater id).
    assert expected == max(view, key=lambda n: (weight(n, agent_type, key), n))


def test_no_nodes_means_no_owner() -> None:
    assert owner([], "t", "k") is None
    assert owner(iter(()), "t", "k") is None


@given(st.integers(min_value=2, max_value=32), st.text(max_size=8), agent_types)
def test_keys_spread_evenly_over_any_number_of_nodes(n: int, prefix: str, agent_type: str) -> None:
    """DESIGN §6: balance for N <= 32. No node gets more than twice its fair share of 1000 keys."""
    view = [f"{prefix}node-{i}" for i in range(n)]
    counts = Counter(owner(view, agent_type, key) for key in KEYS)
    assert max(counts.values()) <= 2 * len(KEYS) / n, counts


@given(views.filter(lambda v: len(v) >= 2), agent_types, st.data())
def test_when_a_node_leaves_only_its_keys_move(view: list[str], agent_type: str, data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(view))
    rest = [n for n in view if n != gone]
    for key in KEYS[:200]:
        before = owner(view, agent_type, key)
        after = owner(rest, agent_type, key)
        if before != gone:
            assert after == before, key
        assert after in rest


@given(views, node_ids, agent_types)
def test_when_a_node_joins_keys_only_move_to_it(view: list[str], newcomer: str, agent_type: str) -> None:
    moved = 0
    for key in KEYS[:200]:
        before = owner(view, agent_type, key)
        after = owner([*view, newcomer], agent_type, key)
        if after != before:
            assert after == newcomer, key
            moved += 1
    if newcomer in view:
        assert moved == 0


def test_a_joining_node_takes_about_its_share() -> None:
    view = [f"node-{i}" for i in range(8)]
    moved = sum(owner(view, "t", k) != owner([*view, "node-8"], "t", k) for k in KEYS)
    assert len(KEYS) / 9 / 2 <= moved <= len(KEYS) / 9 * 2


def test_the_owner_depends_on_the_agent_type_too() -> None:
    view = [f"node-{i}" for i in range(8)]
    assert [owner(view, "a", k) for k in KEYS[:100]] != [owner(view, "b", k) for k in KEYS[:100]]


PROBE = """
import json, sys
from mesh._placement import owner
view = [f"node-{i}" for i in range(7)]
print(json.dumps([owner(view, "agent", k) for k in sys.argv[1:]]))
"""


def owners_in_a_process(hash_seed: str, probe_keys: list[str]) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *probe_keys], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(out.stdout))


def test_owners_do_not_depend_on_the_process_hash_seed() -> None:
    """Python's hash() of a str changes with PYTHONHASHSEED; placement must not (DESIGN §2)."""
    probe_keys = KEYS[:50]
    here = [owner([f"node-{i}" for i in range(7)], "agent", k) for k in probe_keys]
    assert owners_in_a_process("1", probe_keys) == here
    assert owners_in_a_process("4242", probe_keys) == here


def test_weights_are_pinned() -> None:
    """Nodes of different versions must agree: the weight is a fixed function (BLAKE2b-64 of
    ``node\\0type\\0key``), pinned here so that a change cannot slip in unnoticed."""
    assert weight("node-1", "agent", "key-1") == 4025437386765048269
    view = [f"node-{i}" for i in range(5)]
    assert [owner(view, "agent", k) for k in "abcdefgh"] == PINNED_OWNERS


PINNED_OWNERS = ["node-2", "node-2", "node-4", "node-4", "node-2", "node-3", "node-4", "node-2"]
