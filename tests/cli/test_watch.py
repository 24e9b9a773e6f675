"""``agentmesh watch TOPIC_TYPE[/SOURCE]`` prints each message published to the topic as it passes:
time, topic, sender, type and content (AutoGen JSON payloads as JSON, msgpack-native values as
themselves), filtered by source; the other subscribers still get every message; --count and
--timeout end it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from support.cli import Child, Children

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, TopicId, event, type_subscription
from mesh.testing import wait_for

WAIT_S = 15.0


@dataclass
class Reading:
    sensor: str
    celsius: float


@type_subscription("readings")
class Archive(RoutedAgent):
    """A subscriber of the same topic: the watch must not take its messages away."""

    seen: list[Any] = []

    @event
    async def on_reading(self, message: Reading | dict | str | bytes, ctx: MessageContext) -> None:
        Archive.seen.append(message)


async def watcher_subscribed(node: MeshNode, source: str) -> None:
    """Until ``node``'s routing table shows the watch's subscription (the watch registered it)."""

    def subscribed() -> bool:
        return any(a.type.startswith("agentmesh-watch-") for a in node.routing_table.recipients("readings", source))

    await wait_for(subscribed, WAIT_S, "the watch's subscription")


async def start_watch(children: Children, node: MeshNode, *args: str) -> Child:
    return await children.start(
        "watch", ["-m", "mesh", "watch", *args, "--seed", str(node.address), "--discovery", "none"]
    )


async def test_watch_prints_each_message_of_the_topic_as_json(children: Children, nodes: Callable[..., Any]) -> None:
    Archive.seen = []
    hub = await nodes("hub")
    await Archive.register(hub, "archive", lambda: Archive("archives readings"))
    watch = await start_watch(children, hub, "readings/lab", "--json", "--count", "4")
    await watcher_subscribed(hub, "lab")

    await hub.publish_message(Reading("t1", 21.5), TopicId("readings", "lab"), sender=AgentId("sensor", "t1"))
    await hub.publish_message(Reading("t2", 99.0), TopicId("readings", "attic"))  # another source: not shown
    await hub.publish_message({"sensor": "t3", "celsius": 22}, TopicId("readings", "lab"))
    await hub.publish_message("plain text", TopicId("readings", "lab"))
    await hub.publish_message(b"\x00\x01", TopicId("readings", "lab"))

    records = [json.loads(line) for line in await watch.rest(WAIT_S)]
    assert await watch.wait() == 0, watch.stderr()
    assert [(r["topic"], r["source"], r["sender"], r["type"], r["content"]) for r in records] == [
        ("readings", "lab", "sensor/t1", "Reading", {"sensor": "t1", "celsius": 21.5}),
        ("readings", "lab", None, "dict", {"sensor": "t3", "celsius": 22}),
        ("readings", "lab", None, "str", "plain text"),
        ("readings", "lab", None, "bytes", "<2 bytes>"),
    ]
    assert all(isinstance(r["time"], float) for r in records)
    # The archive, subscribed to the same topic, got all five (the attic's one too).
    await wait_for(lambda: len(Archive.seen) == 5, WAIT_S, "the archive's five messages")
    assert "watching readings/lab on mesh default" in watch.stderr()


async def test_watch_prints_one_line_per_message_by_default(children: Children, nodes: Callable[..., Any]) -> None:
    hub = await nodes("hub")
    watch = await start_watch(children, hub, "readings", "--count", "2")
    await watcher_subscribed(hub, "attic")
    await hub.publish_message(Reading("t1", 21.5), TopicId("readings", "attic"), sender=AgentId("sensor", "t1"))
    await hub.publish_message(["a", 1], TopicId("readings", "lab"))
    lines = await watch.rest(WAIT_S)
    assert await watch.wait() == 0
    time_ = r"\d\d:\d\d:\d\d\.\d\d\d"
    assert re.fullmatch(rf'{time_}  readings/attic  sensor/t1  Reading  {{"sensor": "t1", "celsius": 21.5}}', lines[0])
    assert re.fullmatch(rf'{time_}  readings/lab  -  list  \["a", 1\]', lines[1]), lines


async def test_watch_ends_after_its_timeout_with_code_1_when_fewer_than_count_arrived(
    children: Children, nodes: Callable[..., Any]
) -> None:
    hub = await nodes("hub")
    args = ["-m", "mesh", "watch", "quiet", "--count", "3", "--timeout", "0.5"]
    result = await children.run("watch", [*args, "--seed", str(hub.address), "--discovery", "none"])
    assert (result.code, result.stdout) == (1, ""), result
    result = await children.run("watch", [*args[:4], "--timeout", "0.5", "--seed", str(hub.address),
                                          "--discovery", "none"])  # fmt: skip
    assert (result.code, result.stdout) == (0, ""), result


async def test_watch_stops_on_sigterm(children: Children, nodes: Callable[..., Any]) -> None:
    hub = await nodes("hub")
    watch = await start_watch(children, hub, "readings")
    await watcher_subscribed(hub, "any")
    assert await watch.terminate() == 0
    await wait_for(lambda: hub.peers == [], WAIT_S, "the watch's node leaving")


@pytest.mark.parametrize("topic", ["bad topic", "", "sp ace/x"])
async def test_an_invalid_topic_type_is_a_usage_error(children: Children, topic: str) -> None:
    result = await children.run("watch", ["-m", "mesh", "watch", topic, "--discovery", "none"])
    assert result.code == 2 and "is not a topic type" in result.stderr, result


async def test_a_watch_that_cannot_start_its_node_says_why(children: Children) -> None:
    args = ["-m", "mesh", "watch", "readings", "--discovery", "none", "--host", "192.0.2.1"]  # TEST-NET-1: not ours
    result = await children.run("watch", args)
    assert result.code == 1, result
    assert "agentmesh watch: cannot start the node: " in result.stderr and "Traceback" not in result.stderr
