"""Membership (DESIGN §4): the SWIM state machine, driven by the deterministic simulator and by
direct calls. Every run is seeded; time is the simulator's fake clock, so nothing here sleeps.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from discovery import MemberRecord, MembershipConfig, MemberStatus, RecordDecodeError
from discovery._sim import LogEntry, SimulatedMesh
from discovery._swim import (
    DIGEST,
    HANDSHAKE_CODES,
    JOIN,
    JOIN_RETRY_S,
    PING,
    PULL,
    REFUSE,
    STATE,
    SYNC,
    Event,
    Send,
    SendEndpoint,
    SwimState,
)

CFG = MembershipConfig()
LATENCY_S = 0.0005  # the simulator's default one-way delay
ALL_CODES = range(1, 15)


def build(n: int, seed: int, *, stagger_s: float = 0.0, **options: Any) -> tuple[SimulatedMesh, list[str]]:
    sim = SimulatedMesh(CFG, seed, **options)
    ids = []
    for _ in range(n):
        ids.append(sim.add_node())
        sim.run_for(stagger_s)
    sim.run_until_converged(2.0)
    return sim, ids


def log_of(sim: SimulatedMesh, kind: str, subject: str | None = None, since: float = 0.0) -> list[LogEntry]:
    return [e for e in sim.log if e.kind == kind and e.time >= since and (subject is None or e.subject == subject)]


def run_until(sim: SimulatedMesh, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.01) -> float:
    """Run the simulation until ``predicate`` holds; returns the simulated time it took."""
    start = sim.now
    while not predicate():
        assert sim.now - start < timeout_s, f"condition not met within {timeout_s} s of simulated time"
        sim.run_for(step_s)
    return sim.now - start


def worst_case_detection_s(n: int, cfg: MembershipConfig = CFG) -> float:
    """Provable bound on the time from a crash until every survivor holds the node dead, at rest
    (no node doubts itself, so no timeout is scaled).

    Each survivor probes one member per interval in a shuffled round robin over its n - 1
    members, so it probes the dead node within 2(n - 1) - 1 intervals of the crash (just probed
    before it, last in the next round). That probe turns into a suspicion one interval later
    (direct, then indirect probes), the suspicion into a verdict after at most the suspicion
    timeout, and the verdict reaches everyone one message later (plus one latency of margin).
    """
    rounds = 2 * (n - 1) - 1
    return rounds * cfg.probe_interval_s + cfg.probe_interval_s + cfg.suspicion_timeout_s + 2 * LATENCY_S


# -- joining ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("stagger_s", [0.0, 0.3])
def test_five_nodes_joining_through_a_seed_converge_and_see_each_other_join(stagger_s: float) -> None:
    sim, ids = build(5, seed=1, stagger_s=stagger_s)
    assert sim.now < 5 * stagger_s + 0.05  # converged as soon as the last join went round
    for observer in ids:
        joined = [e.subject for e in sim.log if e.observer == observer and e.kind == "joined"]
        assert sorted(joined) == sorted(set(ids) - {observer})
        assert sim.alive_view(observer) == set(ids) - {observer}
    assert all(sim.nodes[i].state.joined for i in ids)
    assert log_of(sim, "suspect") == [] and log_of(sim, "dead") == []


def test_a_node_with_unreachable_seeds_keeps_asking_and_joins_when_one_appears() -> None:
    sim = SimulatedMesh(CFG, seed=2)
    first = sim.add_node("first", seeds=[SimulatedMesh.endpoint_of("later")])
    sim.run_for(3.0)
    assert not sim.nodes[first].state.joined and sim.nodes[first].sent_by_code[JOIN] >= 3  # retried
    sim.add_node("later", seeds=[])
    sim.run_until_converged(JOIN_RETRY_S + 0.01)  # the next retry gets through


# -- failure detection -------------------------------------------------------------------------------


def detection_times(n: int, seeds: range) -> list[float]:
    """Crash one node per run; the time until the last survivor declared it dead."""
    times = []
    for seed in seeds:
        sim, ids = build(n, seed)
        sim.run_for(2.0 + (seed % 10) * 0.047)  # crash at varied points of the probe rounds
        victim = ids[seed % n]
        crashed_at = sim.now
        sim.kill(victim)
        bound = worst_case_detection_s(n)
        sim.run_for(bound + 1.0)
        verdicts = {e.observer: e.time - crashed_at for e in log_of(sim, "dead", victim, since=crashed_at)}
        assert set(verdicts) == set(ids) - {victim}, f"seed {seed}: not every survivor declared {victim} dead"
        assert max(verdicts.values()) <= bound, f"seed {seed}: {verdicts}"
        # No false positive among the survivors, and the view settles on them.
        assert {e.subject for e in log_of(sim, "suspect") + log_of(sim, "dead")} == {victim}
        assert sim.converged()
        times.append(max(verdicts.values()))
    return times


def test_a_crashed_node_is_declared_dead_by_every_survivor_within_the_bound() -> None:
    times = detection_times(5, range(40))
    # With the defaults the worst case for 5 nodes is 5.5 s, but the typical case is what the
    # config promises ("about 2.5 s"): a probe interval to be probed, one to be suspected, and
    # the suspicion timeout (shortened by confirmations).
    assert worst_case_detection_s(5) == pytest.approx(5.501)
    assert statistics.median(times) <= CFG.probe_interval_s * 2 + CFG.suspicion_timeout_s
    assert sum(t <= 3.0 for t in times) >= 0.9 * len(times)


def test_detection_bound_holds_in_a_larger_mesh() -> None:
    times = detection_times(16, range(12))
    assert statistics.median(times) <= CFG.probe_interval_s * 2 + CFG.suspicion_timeout_s


@pytest.mark.parametrize("stall_s", [0.5, 1.0])
@pytest.mark.parametrize("seed", range(12))
def test_a_stall_shorter_than_the_suspicion_timeout_is_never_declared_dead(seed: int, stall_s: float) -> None:
    """DESIGN §4 / MembershipConfig: a 500 ms stall is suspected at most. Even 1 s is safe: a
    suspicion needs a probe interval to form and at least ``suspicion_min_s`` to become a verdict."""
    assert stall_s < CFG.probe_interval_s + CFG.suspicion_min_s
    sim, ids = build(5, seed)
    sim.run_for(2.0 + seed * 0.041)  # stall at varied points of the probe rounds
    slow = ids[1 + seed % 4]
    start = sim.now
    sim.stall(slow, stall_s)
    sim.run_for(8.0)
    assert log_of(sim, "dead") == [] and log_of(sim, "self_dead") == []
    assert sim.nodes[slow].state.me.incarnation == 1
    assert sim.converged()
    # Whoever suspected it took it back: its refutation (a newer version) reached everyone.
    for suspicion in log_of(sim, "suspect", slow, since=start):
        member = sim.nodes[suspicion.observer].state.members[slow]
        assert member.status is MemberStatus.ALIVE
        assert member.record.version > 0


def test_a_stalled_node_that_is_suspected_refutes_and_doubts_itself() -> None:
    """The stall test above is not vacuous: a 1 s stall usually gets the node suspected."""
    suspected = 0
    for seed in range(12):
        sim, ids = build(5, seed)
        sim.run_for(2.0 + seed * 0.041)
        slow = ids[1 + seed % 4]
        start = sim.now
        sim.stall(slow, 1.0)
        sim.run_for(1.0 + 2 * LATENCY_S)
        if log_of(sim, "suspect", slow, since=start):
            suspected += 1
            refuted = {e.observer for e in log_of(sim, "updated", slow, since=start)}
            assert refuted == set(ids) - {slow}  # its newer version reached everyone
            assert sim.nodes[slow].state.local_health >= 1  # it doubted itself (Lifeguard)
    assert suspected >= 3


def test_a_long_stall_is_declared_dead_and_the_node_rejoins_as_a_new_incarnation() -> None:
    sim, ids = build(5, seed=3)
    sim.run_for(2.0)
    slow = ids[2]
    stall_s = worst_case_detection_s(5) + 1.0  # surely declared dead meanwhile
    start = sim.now
    sent = sim.nodes[slow].sent_messages
    sim.stall(slow, stall_s)
    sim.run_for(stall_s - 0.001)
    assert sim.nodes[slow].sent_messages == sent  # a stuck loop neither sends nor answers
    # Declared dead by everyone while stuck, and it knows nothing of it yet.
    assert {e.observer for e in log_of(sim, "dead", slow, since=start)} == set(ids) - {slow}
    assert log_of(sim, "self_dead") == []
    resumed = start + stall_s
    sim.run_until(resumed + 0.1)
    # The first thing it sends is dropped and answered with a DEAD notice: it learns and rejoins.
    told = log_of(sim, "self_dead", slow, since=resumed)
    assert told and told[0].observer == slow and told[0].time - resumed < 0.01
    me = sim.nodes[slow].state.me
    assert me.incarnation > 1
    sim.run_until_converged(1.0)
    for other in set(ids) - {slow}:
        rejoined = [e for e in log_of(sim, "joined", slow, since=resumed) if e.observer == other]
        assert [e.incarnation for e in rejoined] == [me.incarnation]
        record = sim.nodes[other].state.members[slow].record
        assert record.incarnation == me.incarnation
        assert sim.nodes[other].state.status_of(slow, 1) is MemberStatus.DEAD  # the old one stays dead
        assert [r.incarnation for r in sim.nodes[other].state.alive() if r.node_id == slow] == [me.incarnation]
    assert sim.alive_view(slow) == set(ids) - {slow}


def test_a_crashed_node_restarting_under_a_new_incarnation_replaces_the_old_one() -> None:
    sim, ids = build(4, seed=4)
    sim.run_for(1.0)
    node = ids[3]
    sim.rejoin(node, incarnation=7)  # a restart before anyone noticed the old process was gone
    sim.run_until_converged(1.0)
    for other in ids[:3]:
        assert sim.nodes[other].state.members[node].record.incarnation == 7
        assert [e.incarnation for e in log_of(sim, "joined", node) if e.observer == other] == [1, 7]
    sim.run_for(5.0)
    assert log_of(sim, "dead") == [] and sim.converged()


def test_a_seeded_simulation_is_reproducible_even_with_jitter() -> None:
    def run(seed: int) -> tuple[list[LogEntry], dict[str, tuple[int, int]]]:
        sim, ids = build(6, seed, jitter_s=0.002)
        sim.run_for(2.0)
        sim.kill(ids[4])
        sim.run_for(worst_case_detection_s(6))
        survivors = set(ids) - {ids[4]}
        assert {e.observer for e in log_of(sim, "dead", ids[4])} == survivors
        assert log_of(sim, "dead", ids[4]) == log_of(sim, "dead")
        return sim.log, {i: (n.sent_messages, n.sent_bytes) for i, n in sim.nodes.items()}

    assert run(11) == run(11)
    assert run(11) != run(12)


# -- leave, metadata and anti-entropy ------------------------------------------------------------------


def test_a_graceful_leave_is_seen_at_once_without_suspicion() -> None:
    sim, ids = build(5, seed=5)
    sim.run_for(1.3)
    leaver = ids[2]
    start = sim.now
    sim.leave(leaver)
    sim.run_for(2 * LATENCY_S)
    assert {e.observer for e in log_of(sim, "left", leaver)} == set(ids) - {leaver}
    assert all(e.time - start <= LATENCY_S * 1.01 for e in log_of(sim, "left", leaver))
    sim.run_for(worst_case_detection_s(4))
    assert log_of(sim, "suspect") == [] and log_of(sim, "dead") == []
    assert sim.converged()


def test_metadata_reaches_every_member_and_every_member_acknowledges() -> None:
    sim, ids = build(5, seed=6)
    sim.run_for(1.0)
    node = ids[1]
    sim.set_metadata(node, b"types: a, b")
    assert sim.nodes[node].state.awaiting_ack == set(ids) - {node}
    sim.run_for(2 * LATENCY_S + 1e-6)
    assert sim.nodes[node].state.awaiting_ack == set()
    acked = [e for e in sim.log if e.kind == "acked" and e.observer == node]
    assert len(acked) == 4
    for other in set(ids) - {node}:
        record = sim.nodes[other].state.members[node].record
        assert (record.metadata, record.version) == (b"types: a, b", 1)
        assert [e.observer for e in log_of(sim, "updated", node)].count(other) == 1


def test_a_lost_update_is_repaired_by_anti_entropy() -> None:
    sim, ids = build(5, seed=7)
    sim.run_for(1.2)
    node, cut_off = ids[1], ids[3]
    sim.partition([node], [cut_off])
    sim.set_metadata(node, b"v2")
    sim.run_for(0.005)
    sim.heal()
    assert sim.nodes[cut_off].state.members[node].record.metadata == b""  # the push was lost
    assert sim.nodes[node].state.awaiting_ack == {cut_off}
    digests_before = sum(n.sent_by_code[DIGEST] for n in sim.nodes.values())

    def repaired() -> bool:
        return sim.nodes[cut_off].state.members[node].record.metadata == b"v2"

    took = run_until(sim, repaired, timeout_s=3 * CFG.gossip_interval_s, step_s=0.001)
    assert took <= 3 * CFG.gossip_interval_s
    assert sum(n.sent_by_code[DIGEST] for n in sim.nodes.values()) > digests_before
    assert len({n.state.view_hash() for n in sim.nodes.values()}) == 1
    assert log_of(sim, "suspect") == []


def test_a_healed_partition_merges_again() -> None:
    """Each side of a long partition declares the other dead; once the network heals, the mesh
    must become one again without a restart (DESIGN §2: "after a partition heals, a node that is
    no longer owner closes its copy" presumes the views merge)."""
    sim, ids = build(4, seed=10)
    sim.run_for(1.0)
    sim.partition(ids[:2], ids[2:])
    sim.run_for(worst_case_detection_s(4) + 1.0)
    assert sim.alive_view(ids[0]) == {ids[1]} and sim.alive_view(ids[2]) == {ids[3]}
    sim.heal()
    sim.run_until_converged(30.0)


def idle_cost(n: int, seed: int = 8, window_s: float = 20.0) -> tuple[float, float, int]:
    """Messages and bytes sent per node per second at rest, and how many digests were exchanged."""
    sim, ids = build(n, seed)
    sim.run_for(5.0)  # past the join: every node has probed and synced a few times
    before = {i: (sim.nodes[i].sent_messages, sim.nodes[i].sent_bytes) for i in ids}
    digests = sum(sim.nodes[i].sent_by_code[DIGEST] + sim.nodes[i].sent_by_code[STATE] for i in ids)
    sim.run_for(window_s)
    messages = sum(sim.nodes[i].sent_messages - before[i][0] for i in ids) / n / window_s
    size = sum(sim.nodes[i].sent_bytes - before[i][1] for i in ids) / n / window_s
    digests = sum(sim.nodes[i].sent_by_code[DIGEST] + sim.nodes[i].sent_by_code[STATE] for i in ids) - digests
    return messages, size, digests


def test_idle_cost_per_node_does_not_grow_with_the_mesh() -> None:
    costs = {n: idle_cost(n) for n in (4, 16, 64)}
    base_messages, base_bytes, _ = costs[4]
    for n, (messages, size, digests) in costs.items():
        assert digests == 0, f"N={n}: views agree at rest, only hashes should be exchanged"
        assert messages == pytest.approx(base_messages, rel=0.2), costs
        assert size == pytest.approx(base_bytes, rel=0.2), costs
    # One probe and one ack per probe interval each way, one hash per gossip interval.
    expected = 2 / CFG.probe_interval_s + 1 / CFG.gossip_interval_s
    assert base_messages == pytest.approx(expected, rel=0.1)


def test_a_node_of_another_mesh_is_refused_and_never_becomes_a_member() -> None:
    sim, ids = build(3, seed=9)
    stranger = sim.add_node("stranger", mesh="other")
    sim.run_for(5.0)
    assert [e.observer for e in log_of(sim, "refused")].count(ids[0]) >= 1  # the seed refused it
    # ...without answering: a stranger must not make a node connect to an address it names.
    assert not any(e.observer == stranger for e in log_of(sim, "refused"))
    assert all(stranger not in n.state.members for i, n in sim.nodes.items() if i != stranger)
    assert sim.nodes[stranger].state.members == {} and not sim.nodes[stranger].state.joined
    for i in ids:
        assert sim.alive_view(i) == set(ids) - {i}


# -- direct calls --------------------------------------------------------------------------------------


def record(node_id: str, *, incarnation: int = 1, version: int = 0, mesh: str = "m") -> MemberRecord:
    return MemberRecord(node_id, incarnation, version, f"tcp://{node_id}:1", node_id, mesh, (1, 0))


def joined_state(now: float = 0.0) -> SwimState:
    """A node that joined a mesh of four through seed ``s``: three peers, a probe running."""
    state = SwimState(record("me"), CFG, random.Random(0))
    state.start_join(["tcp://s:1"], now)
    peers = [[record(p).encode(), int(MemberStatus.ALIVE)] for p in ("s", "p1", "p2")]
    state.receive(None, [STATE, peers, True], now)
    state.tick(now + CFG.probe_interval_s)
    return state


def test_a_stranger_is_heard_only_for_handshake_messages() -> None:
    state = joined_state()
    for code in ALL_CODES:
        if code not in HANDSHAKE_CODES:
            assert state.receive(None, [code, 1, 2, 3], 1.0) == []
    assert state.receive(None, [STATE, [[record("x").encode(), 0]], True], 1.0) == []  # unsolicited
    assert "x" not in state.members


def test_records_of_another_mesh_are_ignored_even_from_a_member() -> None:
    state = joined_state()
    out = state.receive("s", [STATE, [[record("x", mesh="other").encode(), 0]], False], 1.0)
    assert out == [] and "x" not in state.members
    out = state.receive(None, [1, record("y", mesh="other").encode()], 1.0)
    assert [(type(o), o.kind) for o in out if isinstance(o, Event)] == [(Event, "refused")]
    assert not any(isinstance(o, Send | SendEndpoint) for o in out) and "y" not in state.members
    # A refusal nobody asked for is ignored; one answering our own join is reported.
    assert state.receive(None, [REFUSE, "go away"], 1.0) == []


def test_a_digest_with_news_pulls_them_and_answers_with_what_the_peer_lacks() -> None:
    state = joined_state()
    out = state.receive("s", [SYNC, b"not my hash"], 1.0)
    assert [type(o) for o in out] == [Send] and out[0].message[0] == DIGEST
    # s knows a newer p1 and a node "q" we never heard of, and lacks p2.
    digest = [["s", 1, 0, 0], ["p1", 1, 3, 0], ["q", 1, 0, 0], ["me", 1, 0, 0]]
    out = state.receive("s", [DIGEST, digest, True], 1.0)
    sends = {o.message[0]: o.message for o in out if isinstance(o, Send)}
    assert sorted(sends[PULL][1]) == ["p1", "q"]
    assert [MemberRecord.decode(e[0]).node_id for e in sends[STATE][1]] == ["p2"]


# -- hostile input -------------------------------------------------------------------------------------

native = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
node_ids = st.sampled_from(["me", "s", "p1", "p2", "q"])
small = st.integers(-1, 4)
records = st.builds(
    record, node_ids, incarnation=st.integers(0, 3), version=st.integers(0, 3), mesh=st.sampled_from(["m", "other"])
).map(MemberRecord.encode)
mutated_records = st.tuples(records, st.integers(0, 8), native).map(lambda t: [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]])
any_record = records | mutated_records
entries = st.lists(st.tuples(any_record, small).map(list), max_size=3)
digests = st.lists(st.tuples(node_ids, small, small, small).map(list), max_size=4)
# Each code with the fields it expects, drawn from values the state machine may know about.
FIELDS: dict[int, list[st.SearchStrategy[Any]]] = {
    1: [any_record],
    2: [entries, st.booleans()],
    3: [small],
    4: [small],
    5: [small, node_ids],
    6: [node_ids, small, small],
    7: [node_ids, small, small],
    8: [node_ids, small, small],
    9: [any_record, st.booleans()],
    10: [small, small],
    11: [st.binary(min_size=8, max_size=8)],
    12: [digests, st.booleans()],
    13: [st.lists(node_ids | native, max_size=4)],
    14: [st.text(max_size=20)],
}
well_formed = st.one_of([st.tuples(*fields).map(lambda t, code=code: [code, *t]) for code, fields in FIELDS.items()])
# One field (or the code) replaced by junk, a field added or dropped.
mangled = st.tuples(well_formed, st.integers(0, 3), native, st.sampled_from(["replace", "add", "drop"])).map(
    lambda t: (
        [*t[0][: t[1]], t[2], *t[0][t[1] + 1 :]]
        if t[3] == "replace"
        else [*t[0], t[2]]
        if t[3] == "add"
        else [*t[0][: t[1]], *t[0][t[1] + 1 :]]
    )
)
messages = well_formed | mangled | st.lists(native, max_size=4) | native


def check_usable(state: SwimState, now: float) -> None:
    for later in (now, now + 0.3, now + 2.0, now + 70.0):
        state.next_deadline()
        assert_valid_outputs(state.tick(later))
    assert state.me.node_id not in state.members
    assert all(node_id == m.record.node_id for node_id, m in state.members.items())


def assert_valid_outputs(outputs: Any) -> None:
    assert isinstance(outputs, list)
    for out in outputs:
        assert isinstance(out, Send | SendEndpoint | Event)
        if not isinstance(out, Event):
            msgpack.packb(out.message)  # what we answer can be sent


# Cheap examples, and a bug may hide behind one field of one code: many more than the profile's.
@settings(max_examples=20 * settings().max_examples)
@given(st.lists(st.tuples(st.sampled_from([None, "s", "p1", "p2"]), messages), min_size=1, max_size=6))
@example([("s", [PING, "not a sequence number"]), (None, [REFUSE, {"a": [1, 2]}])])
def test_any_message_is_handled_or_refused_with_a_decode_error(inputs: list[tuple[str | None, Any]]) -> None:
    state = joined_state()
    for i, (sender, message) in enumerate(inputs):
        now = 0.6 + i * 0.1
        try:
            outputs = state.receive(sender, message, now)
        except RecordDecodeError:
            pass
        else:
            assert_valid_outputs(outputs)
    check_usable(state, 0.6 + len(inputs) * 0.1)


# A well-formed message of every code, each one that the joined state acts upon.
WELL_FORMED = [
    [1, record("q").encode()],
    [2, [[record("q").encode(), 0], [record("p1", version=2).encode(), 1]], True],
    [3, 1],
    [4, 1],
    [5, 1, "p1"],
    [6, "p1", 1, 0],
    [7, "p2", 1, 0],
    [8, "p1", 1, 0],
    [9, record("s", version=1).encode(), True],
    [10, 1, 0],
    [11, b"12345678"],
    [12, [["s", 1, 1, 0], ["q", 1, 0, 0], ["p1", 1, 0, 1]], True],
    [13, ["s", "p1", "me"]],
    [14, "refused"],
]
JUNK = [None, True, -1, 2**64 - 1, 1.5, float("nan"), "", "x" * 70, b"", [], [[]], {}, {"a": [1]}]


def single_point_mutations(value: Any, depth: int = 0) -> list[Any]:
    """Every variant of ``value`` with one item somewhere inside it replaced by junk, added or dropped."""
    variants: list[Any] = list(JUNK) if depth else []
    if isinstance(value, list) and depth < 4:
        for i, item in enumerate(value):
            variants.extend([*value[:i], v, *value[i + 1 :]] for v in single_point_mutations(item, depth + 1))
        variants.extend([value[:-1], [*value, None]])
    return variants


def test_well_formed_messages_reach_the_state_machine() -> None:
    """The base messages below are not refused outright (so their mutations test the handlers)."""
    for message in WELL_FORMED:
        assert_valid_outputs(joined_state().receive("s", message, 0.6))


@pytest.mark.parametrize("base", WELL_FORMED, ids=lambda m: f"code{m[0]}")
def test_every_single_point_mutation_is_handled_or_refused(base: list[Any]) -> None:
    for message in single_point_mutations(base):
        for sender in ("s", None):
            state = joined_state()
            try:
                outputs = state.receive(sender, message, 0.6)
            except RecordDecodeError:
                pass
            else:
                assert_valid_outputs(outputs)
            check_usable(state, 0.6)


@pytest.mark.parametrize("depth", [600, 1000])
@pytest.mark.parametrize("code", ALL_CODES)
def test_deeply_nested_values_from_the_wire_are_handled_or_refused(code: int, depth: int) -> None:
    """msgpack decodes values nested about 1000 deep; str() or repr() of one overflows the stack."""
    value = msgpack.unpackb(b"\x91" * depth + b"\xc0")  # [[[...[None]...]]], as a peer can send it
    for sender in (None, "s"):
        for message in ([code, value], [code, value, value], [code, value, value, value]):
            state = joined_state()
            try:
                outputs = state.receive(sender, message, 0.6)
            except RecordDecodeError:
                pass
            else:
                assert_valid_outputs(outputs)
            check_usable(state, 0.6)
