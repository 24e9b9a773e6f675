"""In-process scenarios: one runtime in one process, no sockets crossed.

Ours is ``mesh.MeshNode(discovery="none")`` with mesh's RoutedAgent; the baseline is AutoGen's
``SingleThreadedAgentRuntime`` with autogen_core's RoutedAgent. Agents, handlers and loops are
the same code for both, line for line; only the imports differ.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import autogen_core

import mesh

from ._framework import Metric, RunContext, Workload, latency_us, scenario, target, time_calls, wait_for_event
from ._workload import PAYLOAD_DESCRIPTION, Ack, Payload, payload

TOPIC_TYPE = "bench"
SINK_TYPE = "sink"
ECHO_TYPE = "echo"
# Far above any plausible run (the slowest system delivers thousands per second); only a hang hits it.
DELIVERY_TIMEOUT_S = 300.0

PUBLISH = scenario(
    "inprocess.publish",
    title="Publish throughput in one process, one subscriber",
    description=(
        "One runtime, one subscribed RoutedAgent that counts messages; the publisher awaits "
        "publish_message n times in a loop. The clock runs from the first publish to the handler "
        "seeing the n-th message."
    ),
    metrics=(Metric("delivered_per_s", "delivered", "msg/s", better="higher"),),
    workload=Workload(quick=5_000, full=80_000),
    message=PAYLOAD_DESCRIPTION,
)

target(
    PUBLISH, "delivered_per_s", "autogen-st", at_least=10.0, text="in-process publish >= 10x SingleThreadedAgentRuntime"
)

RPC = scenario(
    "inprocess.rpc",
    title="Sequential RPC latency in one process",
    description=(
        "One runtime, one RoutedAgent with an @rpc handler that returns an Ack; send_message is "
        "awaited n times one after another, after a warm-up of a tenth as many (at least 100). "
        "Each call is timed on its own."
    ),
    metrics=(
        Metric("p50_us", "p50 latency", "µs", better="lower"),
        Metric("p99_us", "p99 latency", "µs", better="lower"),
    ),
    workload=Workload(quick=2_000, full=20_000, unit="calls"),
    message=f"{PAYLOAD_DESCRIPTION}; reply Ack(seq: int)",
)


class _Count:
    """Counts deliveries; notes the time of the n-th and sets ``done``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.last_at = 0.0
        self.done = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.last_at = time.perf_counter()
            self.done.set()


class MeshSink(mesh.RoutedAgent):
    def __init__(self, counter: _Count) -> None:
        super().__init__("counts payloads")
        self._counter = counter

    @mesh.message_handler
    async def on_payload(self, message: Payload, ctx: mesh.MessageContext) -> None:
        self._counter.hit()


class AutogenSink(autogen_core.RoutedAgent):
    def __init__(self, counter: _Count) -> None:
        super().__init__("counts payloads")
        self._counter = counter

    @autogen_core.message_handler
    async def on_payload(self, message: Payload, ctx: autogen_core.MessageContext) -> None:
        self._counter.hit()


class MeshEcho(mesh.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("acknowledges payloads")

    @mesh.rpc
    async def on_payload(self, message: Payload, ctx: mesh.MessageContext) -> Ack:
        return Ack(message.seq)


class AutogenEcho(autogen_core.RoutedAgent):
    def __init__(self) -> None:
        super().__init__("acknowledges payloads")

    @autogen_core.rpc
    async def on_payload(self, message: Payload, ctx: autogen_core.MessageContext) -> Ack:
        return Ack(message.seq)


async def _publish_loop(runtime: Any, topic: Any, counter: _Count, n: int) -> dict[str, float]:
    message = payload()
    await runtime.get(SINK_TYPE, lazy=False)  # create the agent before the clock starts
    started = time.perf_counter()
    for _ in range(n):
        await runtime.publish_message(message, topic)
    await wait_for_event(counter.done, DELIVERY_TIMEOUT_S, f"{n:,} deliveries ({counter.count:,} so far)")
    return {"delivered_per_s": n / (counter.last_at - started)}


async def _rpc_loop(runtime: Any, recipient: Any, n: int) -> dict[str, float]:
    message = payload()

    async def call() -> None:
        await runtime.send_message(message, recipient)

    samples = await time_calls(call, n, warmup=max(100, n // 10))
    return latency_us(samples)


@PUBLISH.system("agentmesh", "agentmesh MeshNode", ours=True)
async def publish_mesh(run: RunContext) -> dict[str, float]:
    node = mesh.MeshNode(discovery="none")
    counter = _Count(run.n)
    await MeshSink.register(node, SINK_TYPE, lambda: MeshSink(counter))
    await node.add_subscription(mesh.TypeSubscription(TOPIC_TYPE, SINK_TYPE))
    await node.start()
    try:
        return await _publish_loop(node, mesh.TopicId(TOPIC_TYPE, "bench"), counter, run.n)
    finally:
        await node.stop()


@PUBLISH.system("autogen-st", "AutoGen SingleThreadedAgentRuntime")
async def publish_autogen(run: RunContext) -> dict[str, float]:
    runtime = autogen_core.SingleThreadedAgentRuntime()
    counter = _Count(run.n)
    await AutogenSink.register(runtime, SINK_TYPE, lambda: AutogenSink(counter))
    await runtime.add_subscription(autogen_core.TypeSubscription(TOPIC_TYPE, SINK_TYPE))
    runtime.start()
    try:
        return await _publish_loop(runtime, autogen_core.TopicId(TOPIC_TYPE, "bench"), counter, run.n)
    finally:
        await runtime.stop_when_idle()


@RPC.system("agentmesh", "agentmesh MeshNode", ours=True)
async def rpc_mesh(run: RunContext) -> dict[str, float]:
    node = mesh.MeshNode(discovery="none")
    await MeshEcho.register(node, ECHO_TYPE, MeshEcho)
    await node.start()
    try:
        return await _rpc_loop(node, mesh.AgentId(ECHO_TYPE, "default"), run.n)
    finally:
        await node.stop()


@RPC.system("autogen-st", "AutoGen SingleThreadedAgentRuntime")
async def rpc_autogen(run: RunContext) -> dict[str, float]:
    runtime = autogen_core.SingleThreadedAgentRuntime()
    await AutogenEcho.register(runtime, ECHO_TYPE, AutogenEcho)
    runtime.start()
    try:
        return await _rpc_loop(runtime, autogen_core.AgentId(ECHO_TYPE, "default"), run.n)
    finally:
        await runtime.stop_when_idle()
