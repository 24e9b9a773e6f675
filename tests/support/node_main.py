"""A mesh node in its own OS process, for the multi-process tests (tests/mesh/).

Run: ``python tests/support/node_main.py --name p1 [--seed tcp://...] [--node-id X] [--instance slow:KEY]
[--factory echo] [--factory listener] [--log-level DEBUG] [--exit-on-stdin-eof]
[--discovery mdns --mesh NAME --host 10.77.0.1 --mdns-interfaces eth0] [--control]
[--config JSON --probe --tracemalloc --factory-sink ...]`` (the last: see ``hardening_agents.py``)

It starts a ``MeshNode`` (by default on loopback without discovery), registers the requested agents,
prints one JSON line ``{"address", "node_id", "pid", "name", "incarnation"}`` to stdout, then serves
until SIGTERM or SIGINT (``stop_when_signal``) and exits 0. With ``--exit-on-stdin-eof`` it also
stops when its standard input closes, so a node never outlives a test process that died without
cleaning up.

With ``--control`` (implies ``--exit-on-stdin-eof``) it also answers requests, one JSON line each on
stdin, with one JSON line each on stdout: ``{"id": 1, "op": "peers"}`` ->
``{"id": 1, "ok": true, "result": ...}`` (or ``"ok": false, "error": "..."``). That is how a test
drives a node inside a network namespace, which the test process itself cannot reach (see
:func:`control` for the operations).

Tests import the message classes from here (``support.node_main``): the wire names a dataclass by its
class name, so the two processes agree without sharing code at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from mesh import AgentId, MeshConfig, MeshNode, MessageContext, RoutedAgent, TopicId, event, rpc, type_subscription

if __package__:  # imported by the tests as support.node_main
    from support import hardening_agents
else:  # run as a script from tests/support
    import hardening_agents

NEWS_TOPIC = "news"
FACTORY_TYPES = ("echo", "listener")
INSTANCE_TYPES = ("slow",)


@dataclass
class EchoRequest:
    text: str


@dataclass
class EchoReply:
    text: str
    node: str


@dataclass
class WhoAmI:
    pass


@dataclass
class ListPeers:
    pass


@dataclass
class PeerList:
    """The peers a node sees: node id -> sorted agent types that peer hosts."""

    node: str
    peers: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Hang:
    pass


@dataclass
class Ping:
    pass


@dataclass
class SlowStatus:
    node: str
    waiting: int


@dataclass
class News:
    text: str


@dataclass
class GetSeen:
    pass


@dataclass
class Seen:
    node: str
    texts: list[str] = field(default_factory=list)


REPLY_TYPES = (EchoReply, PeerList, SlowStatus, Seen)


def _node(agent: RoutedAgent) -> MeshNode:
    runtime: Any = agent.runtime
    assert isinstance(runtime, MeshNode)
    return runtime


class Echo(RoutedAgent):
    """Answers with the name of the node it runs on; placement spreads its keys over the nodes."""

    def __init__(self) -> None:
        super().__init__("echoes and tells where it runs")

    @rpc
    async def echo(self, message: EchoRequest, ctx: MessageContext) -> EchoReply:
        return EchoReply(message.text, _node(self).name)

    @rpc
    async def whoami(self, message: WhoAmI, ctx: MessageContext) -> str:
        return _node(self).name

    @rpc
    async def peers(self, message: ListPeers, ctx: MessageContext) -> PeerList:
        node = _node(self)
        return PeerList(node.name, {p.node_id: sorted(p.agent_types) for p in node.peers})


@type_subscription(NEWS_TOPIC)
class Listener(RoutedAgent):
    """Records the News published to its key; ``GetSeen`` tells what arrived."""

    def __init__(self) -> None:
        super().__init__("records news")
        self._texts: list[str] = []

    @event
    async def on_news(self, message: News, ctx: MessageContext) -> None:
        self._texts.append(message.text)

    @rpc
    async def seen(self, message: GetSeen, ctx: MessageContext) -> Seen:
        return Seen(_node(self).name, list(self._texts))


class Slow(RoutedAgent):
    """``Hang`` never returns, so calls to it stay in flight; ``Ping`` counts them."""

    def __init__(self) -> None:
        super().__init__("never answers Hang")
        self._never = asyncio.Event()
        self._waiting = 0

    @rpc
    async def hang(self, message: Hang, ctx: MessageContext) -> str:
        self._waiting += 1
        try:
            await self._never.wait()
        finally:
            self._waiting -= 1
        return "unreachable"

    @rpc
    async def ping(self, message: Ping, ctx: MessageContext) -> SlowStatus:
        return SlowStatus(_node(self).name, self._waiting)


# -- control requests (--control) --------------------------------------------------------------------

CALLS: dict[str, tuple[str, Any]] = {
    # op name -> (agent type, message factory taking the request)
    "echo": ("echo", lambda request: EchoRequest(request.get("text", ""))),
    "whoami": ("echo", lambda request: WhoAmI()),
    "seen": ("listener", lambda request: GetSeen()),
}


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


async def control(node: MeshNode, request: dict[str, Any]) -> Any:
    """One control request. Operations:

    - ``peers``: the node's live peers (node id, name, address, incarnation, status, agent types);
    - ``info``: node id, incarnation, address, non-zero counters, the mDNS announcements seen (any
      mesh: node id -> mesh name) and the values of the environment variables named in ``env``;
    - ``call``: ``send_message`` of ``message`` (echo, whoami, seen) to ``AgentId(type, key)``
      with ``timeout`` (default 10 s); the reply as a dict;
    - ``publish``: ``News(text)`` to ``TopicId("news", source)``;
    - ``call_each`` / ``publish_each``: the same for every key / source of ``keys``, concurrently
      (``text`` gets ``-<key>`` appended); a list of replies, or of ``"<error type>: <message>"``.
    """
    op = request.get("op")
    if op == "peers":
        return [
            {
                "node_id": p.node_id,
                "name": p.name,
                "address": p.address,
                "incarnation": p.incarnation,
                "status": p.status,
                "agent_types": sorted(p.agent_types),
            }
            for p in node.peers
        ]
    if op == "info":
        mdns = getattr(node, "_mdns", None)  # test support only: which announcements reached this node
        seen = {} if mdns is None else {node_id: a.mesh for node_id, a in mdns.seen.items()}
        return {
            "node_id": node.node_id,
            "incarnation": node.incarnation,
            "address": node.address,
            "statistics": {k: v for k, v in node.statistics().items() if v},
            "mdns_seen": seen,
            "env": {name: os.environ.get(name) for name in request.get("env", [])},
        }
    if op == "call":
        agent_type, make = CALLS[request["message"]]
        reply = await node.send_message(
            make(request), AgentId(agent_type, request["key"]), timeout=request.get("timeout", 10.0)
        )
        return _jsonable(reply)
    if op == "publish":
        await node.publish_message(News(request["text"]), TopicId(NEWS_TOPIC, request["source"]))
        return None
    if op in ("call_each", "publish_each"):
        single = op.removesuffix("_each")
        requests = [{**request, "op": single, "key": k, "source": k, "text": f"{request.get('text', '')}-{k}"}
                    for k in request["keys"]]  # fmt: skip
        results = await asyncio.gather(*(control(node, r) for r in requests), return_exceptions=True)
        return [f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else r for r in results]
    raise ValueError(f"unknown control operation {op!r}")


async def _answer(node: MeshNode, request: dict[str, Any]) -> None:
    try:
        response = {"id": request.get("id"), "ok": True, "result": await control(node, request)}
    except Exception as exc:
        response = {"id": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(response), flush=True)


def _read_control(loop: asyncio.AbstractEventLoop, node: MeshNode) -> None:
    """In a daemon thread: hand each request line to the loop; at EOF stop the node as on SIGTERM."""
    buffer = b""
    while chunk := os.read(sys.stdin.fileno(), 65_536):  # os.read: see _watch_stdin
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    request = json.loads(line)
                except ValueError:
                    request = {"op": f"<not JSON: {line[:80]!r}>"}
                asyncio.run_coroutine_threadsafe(_answer(node, request), loop)
    os.kill(os.getpid(), signal.SIGTERM)


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", action="append", default=[], help="a seed endpoint (repeatable)")
    parser.add_argument("--node-id", default=None, help="a stable node id (keeps its agent keys across restarts)")
    parser.add_argument(
        "--instance", action="append", default=[], metavar="TYPE:KEY", help="pin one agent here (types: slow)"
    )
    parser.add_argument(
        "--factory", action="append", default=[], choices=FACTORY_TYPES, help="host a factory type (repeatable)"
    )
    parser.add_argument("--join-timeout", type=float, default=None, help="MeshConfig.join_timeout_s")
    parser.add_argument("--log-level", default="INFO", help="level of the log written to stderr")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when standard input closes")
    parser.add_argument("--discovery", choices=("none", "mdns"), default="none", help="MeshNode(discovery=...)")
    parser.add_argument("--mesh", default="default", help="the mesh name")
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind")
    parser.add_argument("--mdns-interfaces", default=None, help="comma-separated interface names or addresses")
    parser.add_argument("--control", action="store_true", help="answer JSON requests on stdin (see the docstring)")
    hardening_agents.add_arguments(parser)
    args = parser.parse_args(argv)
    for spec in args.instance:
        agent_type, sep, key = spec.partition(":")
        if not sep or agent_type not in INSTANCE_TYPES or not key:
            parser.error(f"--instance {spec!r}: expected TYPE:KEY with TYPE one of {', '.join(INSTANCE_TYPES)}")
    return args


async def _register(node: MeshNode, args: argparse.Namespace) -> None:
    if "echo" in args.factory:
        await Echo.register(node, "echo", Echo)
    if "listener" in args.factory:
        await Listener.register(node, "listener", Listener)
    for spec in args.instance:
        agent_type, _, key = spec.partition(":")
        await node.register_agent_instance(Slow(), AgentId(agent_type, key))


def _watch_stdin() -> None:
    """In a daemon thread: at EOF on stdin (the parent is gone) ask the node to stop as on SIGTERM."""
    # os.read, not sys.stdin: a daemon thread blocked inside a buffered reader aborts the
    # interpreter at exit ("could not acquire lock ... at interpreter shutdown").
    while os.read(sys.stdin.fileno(), 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


async def _serve(args: argparse.Namespace) -> None:
    hardening_agents.before_start(args)
    config = MeshConfig() if args.join_timeout is None else MeshConfig(join_timeout_s=args.join_timeout)
    config = hardening_agents.config(args, config)
    interfaces = None if args.mdns_interfaces is None else [i for i in args.mdns_interfaces.split(",") if i]
    node = MeshNode(
        name=args.name,
        mesh=args.mesh,
        discovery=args.discovery,
        host=args.host,
        port=0,
        seeds=args.seed,
        mdns_interfaces=interfaces,
        node_id=args.node_id,
        config=config,
    )
    await node.start()
    try:
        await _register(node, args)
        await hardening_agents.register(node, args)
        # Install the signal handlers before telling the parent we are ready: a SIGTERM sent right
        # after the JSON line must stop the node gracefully, not kill the process.
        serving = asyncio.create_task(node.stop_when_signal())
        await asyncio.sleep(0)  # one loop turn: the task runs up to its first await (handlers installed)
        line = {
            "address": node.address,
            "node_id": node.node_id,
            "pid": os.getpid(),
            "name": node.name,
            "incarnation": node.incarnation,
        }
        print(json.dumps(line), flush=True)
        # After the ready line: control answers never come before it on stdout.
        if args.control:
            reader = threading.Thread(
                target=_read_control, args=(asyncio.get_running_loop(), node), name="control", daemon=True
            )
            reader.start()
        elif args.exit_on_stdin_eof:
            threading.Thread(target=_watch_stdin, name="stdin-watch", daemon=True).start()
        await serving
    finally:
        await node.stop()
        # Counters for a failing test's report (losses, frames dropped, retries...).
        counters = {k: v for k, v in node.statistics().items() if v}
        logging.getLogger("node_main").info("stopped; counters: %s", counters)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s.%(msecs)03d {args.name} %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("asyncio").setLevel(logging.WARNING)  # not "Using selector: ..."
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
