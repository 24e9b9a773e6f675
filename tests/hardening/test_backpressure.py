"""Backpressure and no silent loss (issue 8 part 4; DESIGN §3 "Backpressure", "Delivery promise").

A fast publisher (a node in the test process, publishing as fast as ``publish_message`` returns)
and a deliberately slow subscriber (a ``node_main.py`` process whose ``sink`` agent records each
sequence number and then takes its time). The publisher must be slowed to the subscriber's pace
(``publish_message`` awaits flow-control credit) or, with ``send_timeout_s``, get
``SendTimeoutError``; the subscriber must receive every message the publisher was told was sent,
in order; memory stays bounded on both sides by the configured windows and queues.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from support.hardening_agents import FloodItem, GetSinkLog, SinkLog
from support.hardening_cluster import CALL_TIMEOUT_S, Cluster, node_id
from support.waiting import wait_until

from mesh import MeshConfig, SendTimeoutError, TopicId

pytestmark = pytest.mark.slow

TOPIC = "flood"
PAD = "x" * 8192  # 8 KiB per message: what a queue holds shows in memory
# Generous bytes per message held: payload, its encoding, the record, the frame it is packed into.
MESSAGE_COST = 6 * len(PAD)
MEMORY_BAND = 2 * 1024 * 1024  # allocations that do not depend on the number of messages held
DELIVERY_TIMEOUT_S = 60.0


def _yielded() -> Callable[[], bool]:
    """A probe for "did the code between here and the call suspend": true once the loop ran."""
    ran = False

    def mark() -> None:
        nonlocal ran
        ran = True

    asyncio.get_running_loop().call_soon(mark)
    return lambda: ran


@dataclass
class Run:
    window: int
    published: int
    first_wait: int | None  # index of the first publish_message that suspended (waited for credit)
    long_waits: int  # publishes that waited at least half a sink delay
    publish_s: float
    delivered_s: float
    publisher_peak: int
    subscriber_peak: int


async def _run(make: Callable[[MeshConfig], Cluster], name: str, config: MeshConfig, n: int, delay_s: float) -> Run:
    cluster = make(config)
    await cluster.start_node(name, extra_args=["--tracemalloc", "--factory-sink", f"--sink-delay-s={delay_s}"])
    client = await cluster.start_client()
    await cluster.settle()
    topic = TopicId(TOPIC, "k")
    # Warm-up: the sink agent exists, the serializers are known, the first allocations are made.
    await client.publish_message(FloodItem("warm-up", 0), topic)
    await wait_until(lambda: _received(cluster, name, "warm-up", 1), CALL_TIMEOUT_S, what="the warm-up message")
    sub0 = await cluster.memory(name, reset_peak=True)

    tracemalloc.start()
    try:
        pub0 = tracemalloc.get_traced_memory()[0]
        first_wait: int | None = None
        long_waits = 0
        started = time.monotonic()
        for seq in range(n):
            yielded = _yielded()
            t0 = time.monotonic()
            await client.publish_message(FloodItem("pub", seq, PAD), topic)
            if yielded() and first_wait is None:
                first_wait = seq
            if time.monotonic() - t0 >= delay_s / 2:
                long_waits += 1
        publish_s = time.monotonic() - started
        publisher_peak = tracemalloc.get_traced_memory()[1] - pub0
    finally:
        tracemalloc.stop()

    log = await wait_until(lambda: _received(cluster, name, "pub", n), DELIVERY_TIMEOUT_S, what=f"{n} deliveries")
    delivered_s = time.monotonic() - started
    assert log.seqs == list(range(n)), "messages told sent were lost, duplicated or reordered"
    sub1 = await cluster.memory(name)
    stats = client.statistics()
    assert stats["lost_in_flight"] == 0 and stats["undeliverable"] == 0, stats
    assert (await cluster.state(name)).stats["rejoined"] == 0
    return Run(
        config.window_messages,
        n,
        first_wait,
        long_waits,
        publish_s,
        delivered_s,
        publisher_peak,
        sub1.traced_peak - sub0.traced,
    )


async def _received(cluster: Cluster, name: str, publisher: str, n: int) -> SinkLog | None:
    log = await cluster.probe(name, GetSinkLog(publisher))
    assert isinstance(log, SinkLog)
    return log if len(log.seqs) >= n else None


async def test_a_fast_publisher_is_slowed_to_a_slow_subscriber_within_its_window_and_loses_nothing(
    make_cluster: Any, record_property: Any
) -> None:
    delay_s = 0.002  # the sink takes 2 ms per message, one at a time: at most 500 messages/s
    n = 800
    queued, running = 32, 4
    runs = []
    for window in (16, 256):
        config = MeshConfig(window_messages=window, max_queued=queued, max_running_handlers=running)
        run = await _run(make_cluster, f"sub{window}", config, n, delay_s)
        runs.append(run)
        # The publisher runs freely for one window, then waits for credit (a little earlier when a
        # credit for the set-up's own messages is still on its way: credits are returned once a
        # quarter of the window is due, or after a couple of milliseconds)...
        assert run.first_wait is not None and window - window // 4 <= run.first_wait <= window, run
        # ...and from then on at the subscriber's pace: with at most window + queued + running
        # messages between them, it cannot finish before the subscriber handled the rest.
        ahead = window + queued + running + 1
        assert run.publish_s >= (n - ahead) * delay_s, run
        assert run.long_waits > 0, run
        # Memory: bounded by what the windows and queues hold, not by the number of messages.
        assert run.subscriber_peak < ahead * MESSAGE_COST + MEMORY_BAND, run
        assert run.publisher_peak < (window + 1) * MESSAGE_COST + MEMORY_BAND, run
    small, large = runs
    figures = {
        f"window {r.window}": {
            "first wait at publish": r.first_wait,
            "publishes that waited >= delay/2": r.long_waits,
            "publish_s": round(r.publish_s, 2),
            "delivered_s": round(r.delivered_s, 2),
            "publisher_peak_kib": r.publisher_peak >> 10,
            "subscriber_peak_kib": r.subscriber_peak >> 10,
        }
        for r in runs
    }
    record_property("backpressure", figures)
    print(f"backpressure, {n} messages of {len(PAD)} B, sink 2 ms each: {figures}")
    # The effect of window_messages: a larger window lets the publisher run further ahead and makes
    # the subscriber hold more.
    assert large.long_waits < small.long_waits
    assert large.subscriber_peak > small.subscriber_peak


async def test_a_publisher_out_of_credit_gets_send_timeout_error_and_nothing_told_sent_is_lost(
    make_cluster: Any, record_property: Any
) -> None:
    send_timeout_s = 0.3
    config = MeshConfig(window_messages=8, max_queued=8, max_running_handlers=2)
    cluster = make_cluster(config)
    sub = await cluster.start_node("sub", extra_args=["--tracemalloc", "--factory-sink", "--sink-gate-closed"])
    client = await cluster.start_client(config=replace(config, send_timeout_s=send_timeout_s))
    await cluster.settle()
    sub0 = await cluster.memory("sub", reset_peak=True)
    topic = TopicId(TOPIC, "k")
    told_sent: list[int] = []
    timeouts: list[tuple[int, float]] = []
    seq = 0
    while len(timeouts) < 3 and seq < 500:  # bounded: the gate is closed, so credit runs out
        t0 = time.monotonic()
        try:
            await client.publish_message(FloodItem("pub", seq, PAD), topic)
            told_sent.append(seq)
        except SendTimeoutError as exc:
            timeouts.append((seq, time.monotonic() - t0))
            assert "send_timeout_s" in str(exc)
        seq += 1
    os.kill(sub.pid, signal.SIGUSR1)  # opens the sink's gate (a process this test started)
    await wait_until(
        lambda: _received(cluster, "sub", "pub", len(told_sent)), DELIVERY_TIMEOUT_S, what="the stalled messages"
    )
    # After the stall, publishing works again and continues the sequence.
    for _ in range(50):
        await client.publish_message(FloodItem("pub", seq, PAD), topic)
        told_sent.append(seq)
        seq += 1
    log = await wait_until(
        lambda: _received(cluster, "sub", "pub", len(told_sent)), DELIVERY_TIMEOUT_S, what="every message told sent"
    )
    sub1 = await cluster.memory("sub")
    figures = {
        "told_sent_before_first_timeout": timeouts[0][0],
        "timeouts_after_s": [round(t, 3) for _, t in timeouts],
        "subscriber_peak_kib": (sub1.traced_peak - sub0.traced) >> 10,
    }
    record_property("send_timeout", figures)
    print(f"send_timeout_s={send_timeout_s}: {figures}")
    assert [s for s, _ in timeouts] == [timeouts[0][0], timeouts[0][0] + 1, timeouts[0][0] + 2], timeouts
    assert all(send_timeout_s <= t < send_timeout_s + 2.0 for _, t in timeouts), timeouts
    # Every message told sent arrived, in order; none of those that timed out did.
    assert log.seqs == told_sent
    stats = client.statistics()
    assert stats["lost_in_flight"] == 0 and stats["undeliverable"] == 0, stats
    # While stalled the subscriber held what the window and queues allow, no more.
    ahead = config.window_messages + config.max_queued + config.max_running_handlers + 1
    assert timeouts[0][0] <= ahead
    assert sub1.traced_peak - sub0.traced < ahead * MESSAGE_COST + MEMORY_BAND, figures


async def test_a_cpu_bound_slow_subscriber_is_not_declared_dead_and_loses_nothing(
    make_cluster: Any, record_property: Any
) -> None:
    """Default settings; the sink's handler blocks the loop 3 ms per message, as CPU-bound work does.
    A window of messages (1 000) must not stall the subscriber's loop long enough for a death verdict
    (about 2 s at default timings): the node must let its loop run between handlers."""
    cpu_s = 0.003
    n = 1_200
    config = MeshConfig()
    cluster = make_cluster(config)
    await cluster.start_node("sub", extra_args=["--factory-sink", f"--sink-cpu-s={cpu_s}"])
    client = await cluster.start_client()
    await cluster.settle()
    incarnation = (await cluster.state("sub")).incarnation
    started = time.monotonic()
    for seq in range(n):
        await client.publish_message(FloodItem("pub", seq), TopicId(TOPIC, "k"))

    async def delivered_or_dropped() -> bool:
        if cluster.client_view().get(node_id("sub")) != incarnation:
            return True  # declared dead (and maybe back under a new incarnation)
        return await _received(cluster, "sub", "pub", n) is not None

    await wait_until(delivered_or_dropped, DELIVERY_TIMEOUT_S, what=f"{n} deliveries, or the subscriber dropped")
    elapsed = time.monotonic() - started
    await cluster.settle()  # back, if it was dropped, so that it can be asked what it got
    log = await cluster.probe("sub", GetSinkLog("pub"))
    state = await cluster.state("sub")
    stats = client.statistics()
    figures = {
        "received": len(log.seqs),
        "elapsed_s": round(elapsed, 2),
        "subscriber_rejoined": state.stats["rejoined"],
        "publisher_lost_in_flight": stats["lost_in_flight"],
        "publisher_undeliverable": stats["undeliverable"],
    }
    record_property("cpu_bound_subscriber", figures)
    print(f"CPU-bound subscriber, {n} messages x {cpu_s * 1000:.0f} ms: {figures}")
    assert state.incarnation == incarnation and state.stats["rejoined"] == 0, (
        f"the subscriber was declared dead while busy with its handlers: {figures}"
    )
    assert log.seqs == list(range(n)) and stats["lost_in_flight"] == 0, figures
