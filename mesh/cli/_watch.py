"""``agentmesh watch TOPIC_TYPE[/SOURCE]``: tap a topic and print each message as it passes.

A temporary node joins the mesh and registers a watcher agent type with a ``TypeSubscription``
for the topic type, so every publish to the topic also reaches it (subscriptions add recipients;
nobody else's delivery changes). The watcher knows none of the mesh's classes: dataclasses and
pydantic models arrive as :class:`~mesh.UnknownPayload` of AutoGen's JSON and are printed as that
JSON; msgpack-native values (str, dict, ...) as themselves; anything else as its size.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from typing import Any

import click

from .._base_agent import BaseAgent
from .._ids import AgentType, is_valid_topic_type
from .._message_context import MessageContext
from .._serialization import JSON_DATA_CONTENT_TYPE, UnknownPayload
from .._subscriptions import TypeSubscription
from ._options import JoinOptions, quiet_visitor_logs, start_or_explain, with_join_options


def describe(message: Any) -> tuple[str, Any]:
    """The type name of ``message`` and its content as JSON-able data (or a short description)."""
    if isinstance(message, UnknownPayload):
        if message.data_content_type == JSON_DATA_CONTENT_TYPE:
            try:
                return message.type_name, json.loads(message.payload)
            except ValueError:
                pass
        return message.type_name, f"<{len(message.payload)} bytes of {message.data_content_type}>"
    if isinstance(message, bytes):
        return "bytes", f"<{len(message)} bytes>"
    return type(message).__name__, message


class Tap:
    """What the watcher agents print, shared by all of them (one agent per topic source)."""

    def __init__(self, source: str | None, count: int | None, as_json: bool) -> None:
        self.source = source
        self.count = count
        self.as_json = as_json
        self.printed = 0
        self.done = asyncio.Event()

    def show(self, message: Any, ctx: MessageContext) -> None:
        topic = ctx.topic_id
        if topic is None or (self.source is not None and topic.source != self.source) or self.done.is_set():
            return
        type_name, content = describe(message)
        now = time.time()
        sender = str(ctx.sender) if ctx.sender is not None else None
        if self.as_json:
            record = {"time": now, "topic": topic.type, "source": topic.source, "sender": sender, "type": type_name}
            click.echo(json.dumps({**record, "content": content}, default=repr, ensure_ascii=False))
        else:
            clock = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
            text = json.dumps(content, default=repr, ensure_ascii=False)
            click.echo(f"{clock}  {topic.type}/{topic.source}  {sender or '-'}  {type_name}  {text}")
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()


class Watcher(BaseAgent):
    def __init__(self, tap: Tap) -> None:
        super().__init__("agentmesh watch: prints what it receives")
        self._tap = tap

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any:
        self._tap.show(message, ctx)
        return None


async def run_watch(join: JoinOptions, topic_type: str, tap: Tap, timeout_s: float | None) -> int:
    node = join.visitor("watch")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, tap.done.set)
    try:
        if not await start_or_explain(node, "watch"):
            return 1
        agent_type = f"agentmesh-watch-{secrets.token_hex(4)}"
        await node.register_factory(AgentType(agent_type), lambda: Watcher(tap), expected_class=Watcher)
        await node.add_subscription(TypeSubscription(topic_type, agent_type))
        where = f"/{tap.source}" if tap.source is not None else ""
        click.echo(f"watching {topic_type}{where} on mesh {node.mesh} from {node.address}", err=True)
        try:
            await asyncio.wait_for(tap.done.wait(), timeout_s)
        except TimeoutError:
            pass  # --timeout: the watch ends
    finally:
        await node.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 1 if tap.count is not None and tap.printed < tap.count else 0


@click.command("watch")
@click.argument("topic", metavar="TOPIC_TYPE[/SOURCE]")
@with_join_options
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after this many messages.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Exit after this many seconds (exit code 1 if --count messages had not arrived).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message.")
def watch(join: JoinOptions, topic: str, count: int | None, timeout_s: float | None, as_json: bool) -> None:
    """Print each message published to a topic type (and source) as it passes: time, topic, sender,
    type and content, until Ctrl-C, --count or --timeout.

    The watch joins the mesh with a temporary node that subscribes to the topic type; other
    subscribers receive their messages as before.
    """
    topic_type, slash, source = topic.partition("/")
    if not is_valid_topic_type(topic_type):
        raise click.BadParameter(
            f"{topic_type!r} is not a topic type (letters, digits, and _ - . : =)", param_hint="TOPIC_TYPE"
        )
    tap = Tap(source if slash else None, count, as_json)
    with quiet_visitor_logs():
        code = asyncio.run(run_watch(join, topic_type, tap, timeout_s))
    raise SystemExit(code)
