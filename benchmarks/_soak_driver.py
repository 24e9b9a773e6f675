"""The soak: three node processes, a mix of publishes and RPCs of 100 B to ``max_size``, exactly-once
accounting, and the memory of every node after warm-up (issue 8 part 5).

Used by ``benchmarks/soak.py`` (``python -m benchmarks soak``) and by
``tests/hardening/test_soak.py`` (a reduced size); also runnable alone, once:
``python -m benchmarks._soak_driver [--full] [--publishes N --rpcs N --max-size BYTES]``.

Every node hosts the agent types ``soak_sink`` (subscribed to topic type ``soak``; the key is the
topic source) and ``soak_echo`` (an RPC handler), and runs its share of the load: one publisher
and ``rpc_concurrency`` callers over ``keys`` keys, so most messages cross processes (placement
spreads the keys over the nodes) and some stay local. Messages are msgpack lists
``[origin, seq, payload]``; payload sizes follow a fixed mix with 100 B to ``max_size`` (the maximum
itself included), derived from a seeded generator.

The load runs in ``phases`` equal parts. Between two phases the parent waits until the mesh is
quiet (every publish so far delivered, every call answered) and every node measures its traced
Python memory (``tracemalloc``, after ``gc.collect()``): the first phase is the warm-up, and no
later sample may exceed the one after it by more than ``growth_band`` bytes. At the end every
receiver hands over a bitmap per publisher: each message must have been delivered exactly once.

Parent and nodes speak JSON lines over the nodes' stdin and stdout; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import os
import queue
import random
import resource
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, TopicId, TypeSubscription, event, rpc

PREFIX = "@@soak "
ROOT = Path(__file__).resolve().parent.parent
KIB = 1024
MIB = 1024 * KIB
TOPIC = "soak"
SINK = "soak_sink"
ECHO = "soak_echo"
# How long a node may take to start and see the others, on a loaded 2-core machine.
READY_TIMEOUT_S = 60.0
# Bound on a call (a live peer answers in milliseconds; this only turns a hang into an error).
CALL_TIMEOUT_S = 120.0
# Between two looks at the counters while the mesh drains: a bounded poll, not a synchronisation.
POLL_S = 0.05
STOP_TIMEOUT_S = 30.0
LOG_LINES = 60


@dataclass(frozen=True)
class SoakParams:
    """The size of a soak. ``publishes`` and ``rpcs`` are totals over the nodes."""

    publishes: int
    rpcs: int
    max_size: int
    min_size: int = 100
    nodes: int = 3
    keys: int = 48
    phases: int = 10
    rpc_concurrency: int = 16
    seed: int = 1
    # Traced memory a node may gain after warm-up: allocations that settle late (caches, the
    # interpreter's tables), not a leak; a leak of even a few bytes per message exceeds it.
    growth_band: int = 2 * MIB
    # Bound on one phase (load and drain), per message: generous for 2 loaded cores.
    phase_timeout_s: float = 120.0
    phase_timeout_per_message_s: float = 0.002


QUICK = SoakParams(publishes=20_000, rpcs=2_000, max_size=256 * KIB)
FULL = SoakParams(publishes=1_000_000, rpcs=100_000, max_size=1 * MIB)


@dataclass
class NodeMemory:
    traced: list[int] = field(default_factory=list)  # after each phase, at a quiet point
    traced_peak: list[int] = field(default_factory=list)  # peak during each phase
    rss: list[int] = field(default_factory=list)
    max_rss: int = 0


@dataclass
class SoakResult:
    params: SoakParams
    published: int = 0
    delivered: int = 0
    duplicates: int = 0
    missing: int = 0
    out_of_order: int = 0
    bad_payloads: int = 0
    rpcs_answered: int = 0
    rpc_errors: list[str] = field(default_factory=list)
    load_s: float = 0.0  # the phases, drains included
    wall_s: float = 0.0  # everything, process start and stop included
    bytes_published: int = 0
    largest: int = 0
    memory: dict[str, NodeMemory] = field(default_factory=dict)
    growth_sites: dict[str, list[str]] = field(default_factory=dict)
    lost_counters: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def growth(self) -> dict[str, int]:
        """Per node: the most traced memory after warm-up above the sample right after it."""
        return {name: max(m.traced[1:]) - m.traced[0] if len(m.traced) > 1 else 0 for name, m in self.memory.items()}

    @property
    def peak_traced(self) -> int:
        return max((max(m.traced_peak) for m in self.memory.values() if m.traced_peak), default=0)

    def problems(self) -> list[str]:
        """What makes this soak a failure (empty: it passed)."""
        p = self.params
        out = []
        if self.published != p.publishes:
            out.append(f"{self.published} of {p.publishes} publishes made")
        if self.delivered != p.publishes or self.missing or self.duplicates:
            out.append(f"{self.delivered} deliveries, {self.missing} missing, {self.duplicates} duplicates")
        if self.out_of_order or self.bad_payloads:
            out.append(f"{self.out_of_order} out of order, {self.bad_payloads} bad payloads")
        if self.rpcs_answered != p.rpcs or self.rpc_errors:
            out.append(f"{self.rpcs_answered} of {p.rpcs} calls answered; errors: {self.rpc_errors[:3]}")
        if self.largest != p.max_size:
            out.append(f"the largest message was {self.largest} bytes, not {p.max_size}")
        for name, grown in self.growth.items():
            if grown > p.growth_band:
                out.append(f"{name}: traced memory grew {grown} bytes after warm-up (band {p.growth_band})")
        for name, counters in self.lost_counters.items():
            if any(counters.values()):
                out.append(f"{name} counted losses: {counters}")
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "publishes": self.published,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "missing": self.missing,
            "out_of_order": self.out_of_order,
            "rpcs_answered": self.rpcs_answered,
            "rpc_errors": len(self.rpc_errors),
            "max_size": self.params.max_size,
            "largest": self.largest,
            "mib_published": round(self.bytes_published / MIB, 1),
            "load_s": round(self.load_s, 2),
            "wall_s": round(self.wall_s, 2),
            "publishes_per_s": round(self.published / self.load_s) if self.load_s else 0,
            "rpcs_per_s": round(self.rpcs_answered / self.load_s) if self.load_s else 0,
            "peak_traced_mib": round(self.peak_traced / MIB, 1),
            "growth_after_warmup_kib": {n: g // KIB for n, g in self.growth.items()},
            "traced_mib_by_phase": {n: [round(t / MIB, 2) for t in m.traced] for n, m in self.memory.items()},
            "max_rss_mib": {n: round(m.max_rss / MIB, 1) for n, m in self.memory.items()},
            "growth_sites": self.growth_sites,
            "problems": self.problems(),
        }


# -- the load: who sends what -------------------------------------------------------------------------

# (weight, smallest, largest) size bands; the top band ends at max_size. Mostly small messages,
# as in agent traffic, with a tail of large ones.
SIZE_BANDS = ((0.80, 100, 1 * KIB), (0.15, 1 * KIB, 16 * KIB), (0.04, 16 * KIB, 128 * KIB), (0.01, 128 * KIB, None))


def share(total: int, nodes: int, index: int) -> int:
    return total // nodes + (1 if index < total % nodes else 0)


# A node packs the records queued for one peer into frames of up to half its frame limit (2 MiB by
# default) and keeps the packer's buffer at the largest size it needed: a warm-up burst of the
# largest messages makes it reach that size during the warm-up, not later.
FRAME_BUDGET = 2 * MIB


def sizes(params: SoakParams, origin: int, kind: str, count: int) -> list[int]:
    """Payload sizes of one origin's publishes or calls: the band mix; publishes start with a burst
    of ``max_size`` messages (in the warm-up phase)."""
    rng = random.Random(f"{params.seed}-{origin}-{kind}")
    out = []
    for _ in range(count):
        r = rng.random()
        for weight, lo, hi in SIZE_BANDS:
            top = min(hi or params.max_size, params.max_size)
            if r < weight or hi is None:
                lo = min(lo, top)
                out.append(int(lo * (top / lo) ** rng.random()))  # log-uniform in the band
                break
            r -= weight
    if kind == "publish":
        burst = min(count // params.phases, 3 * (FRAME_BUDGET // params.max_size + 1))
        out[:burst] = [params.max_size] * burst
    return [max(params.min_size, min(s, params.max_size)) for s in out]


def payload(seq: int, size: int) -> bytes:
    return bytes([seq % 251]) * size


def phase_range(count: int, phases: int, k: int) -> range:
    return range(count * k // phases, count * (k + 1) // phases)


# -- a node process ----------------------------------------------------------------------------------


def say(kind: str, **data: Any) -> None:
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, **data}) + "\n")
    sys.stdout.flush()


class Tally:
    """What this node received: a bitmap per publisher, order and payload checks."""

    def __init__(self, params: SoakParams) -> None:
        self.bitmaps = [bytearray((share(params.publishes, params.nodes, o) + 7) // 8) for o in range(params.nodes)]
        self.sizes = [
            sizes(params, o, "publish", share(params.publishes, params.nodes, o)) for o in range(params.nodes)
        ]
        self.last: dict[tuple[int, str], int] = {}
        self.delivered = [0] * params.nodes
        self.duplicates = 0
        self.out_of_order = 0
        self.bad_payloads = 0

    def hit(self, origin: int, seq: int, data: bytes, key: str) -> None:
        bitmap = self.bitmaps[origin]
        byte, bit = divmod(seq, 8)
        if bitmap[byte] >> bit & 1:
            self.duplicates += 1
        bitmap[byte] |= 1 << bit
        self.delivered[origin] += 1
        if seq <= self.last.get((origin, key), -1):
            self.out_of_order += 1
        self.last[(origin, key)] = seq
        expected = self.sizes[origin][seq]
        if len(data) != expected or (data and (data[0] != seq % 251 or data[-1] != seq % 251)):
            self.bad_payloads += 1


_tally: Tally | None = None  # this node process's (one node per process)


class SoakSink(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts what it receives")

    @event
    async def on_item(self, message: list, ctx: MessageContext) -> None:  # type: ignore[type-arg]
        origin, seq, data = message
        assert _tally is not None
        _tally.hit(origin, seq, data, self.id.key)


class SoakEcho(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("answers with what it got")

    @rpc
    async def on_call(self, message: list, ctx: MessageContext) -> list:  # type: ignore[type-arg]
        origin, seq, data = message
        return [origin, seq, len(data)]


_sample_count = [0]  # memory samples taken: the first is before the load, the second after warm-up


def _samples_taken() -> bool:
    return _sample_count[0] == 1


def _growth_lines(top: int) -> list[str]:
    """The allocation sites that grew most since the warm-up sample."""
    if _warm is None:
        return []
    gc.collect()
    return [str(s) for s in tracemalloc.take_snapshot().compare_to(_warm, "lineno")[:top]]


_warm: tracemalloc.Snapshot | None = None  # taken at the first sample: what later growth is compared with


def _memory() -> dict[str, int]:
    global _warm
    gc.collect()
    if _warm is None and _samples_taken():
        _warm = tracemalloc.take_snapshot()
    traced, peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * resource.getpagesize()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB
    return {"traced": traced, "peak": peak, "rss": rss, "max_rss": max_rss}


async def node_main(index: int, seed: str | None, params: SoakParams) -> None:
    global _tally
    tally = _tally = Tally(params)
    node = MeshNode(
        name=f"soak{index}", node_id=f"soak-{index}", discovery="none", seeds=[seed] if seed else [], port=0
    )
    await node.start()
    await SoakSink.register(node, SINK, SoakSink, skip_class_subscriptions=True)
    await node.add_subscription(TypeSubscription(TOPIC, SINK))
    await SoakEcho.register(node, ECHO, SoakEcho)
    commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        os._exit(0)  # the parent is gone

    threading.Thread(target=read, name="soak-stdin", daemon=True).start()
    say("ready", address=node.address)

    keys = [f"k{j}" for j in range(params.keys)]
    n_pub = share(params.publishes, params.nodes, index)
    n_rpc = share(params.rpcs, params.nodes, index)
    pub_sizes = tally.sizes[index]
    rpc_sizes = sizes(params, index, "rpc", n_rpc)
    answered = 0
    errors: list[str] = []
    published = 0
    rng = random.Random(f"{params.seed}-{index}-keys")
    pub_keys = [rng.choice(keys) for _ in range(n_pub)]
    rpc_keys = [rng.choice(keys) for _ in range(n_rpc)]

    async def publisher(seqs: range) -> None:
        nonlocal published
        for seq in seqs:
            data = payload(seq, pub_sizes[seq])
            await node.publish_message([index, seq, data], TopicId(TOPIC, pub_keys[seq]))
            published += 1

    async def caller(seqs: Iterator[int]) -> None:
        nonlocal answered
        for seq in seqs:
            size = rpc_sizes[seq]
            try:
                reply = await node.send_message(
                    [index, seq, payload(seq, size)], AgentId(ECHO, rpc_keys[seq]), timeout=CALL_TIMEOUT_S
                )
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            if reply == [index, seq, size]:
                answered += 1
            else:
                errors.append(f"call {seq}: wrong reply {str(reply)[:100]}")

    while True:
        command = await commands.get()
        cmd = command["cmd"]
        if cmd == "sync":
            await node.wait_for_peers(params.nodes - 1, timeout=READY_TIMEOUT_S)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while sum({SINK, ECHO} <= set(p.agent_types) for p in node.peers) < params.nodes - 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the soak types did not become visible on every peer: {node.peers}")
                await asyncio.sleep(POLL_S)  # a bounded poll: registrations arrive by gossip
            say("synced")
        elif cmd == "phase":
            k = command["k"]
            calls = iter(phase_range(n_rpc, params.phases, k))
            async with asyncio.TaskGroup() as tg:
                tg.create_task(publisher(phase_range(n_pub, params.phases, k)))
                for _ in range(params.rpc_concurrency):
                    tg.create_task(caller(calls))
            say("phase_done", k=k, published=published, answered=answered, errors=errors[-5:], n_errors=len(errors))
        elif cmd == "counts":
            say(
                "counts",
                delivered=tally.delivered,
                duplicates=tally.duplicates,
                out_of_order=tally.out_of_order,
                bad_payloads=tally.bad_payloads,
                idle=node.unprocessed_messages_count == 0 and node.statistics()["unacknowledged"] == 0,
            )
        elif cmd == "memory":
            say("memory", **_memory())
            _sample_count[0] += 1
        elif cmd == "final":
            stats = node.statistics()
            say(
                "final",
                bitmaps=[base64.b64encode(bytes(b)).decode() for b in tally.bitmaps],
                published=published,
                answered=answered,
                errors=errors[:20],
                n_errors=len(errors),
                lost={k: stats[k] for k in ("lost_in_flight", "undeliverable", "dropped_pending", "bad_frames")},
                growth=_growth_lines(5),
            )
        elif cmd == "stop":
            await node.stop()
            say("stopped")
            return


# -- the parent --------------------------------------------------------------------------------------


class SoakError(RuntimeError):
    """A node failed or did not answer in time; the message carries the end of its log."""


class Node:
    def __init__(self, index: int, seed: str | None, params: SoakParams, log_dir: Path) -> None:
        self.index = index
        self.name = f"soak{index}"
        self.log_path = log_dir / f"{self.name}.log"
        args = [sys.executable, "-m", "benchmarks._soak_driver", "--node", str(index), "--params", _dump(params)]
        if seed:
            args += ["--seed-endpoint", seed]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
            )
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self.messages.put(json.loads(line[len(PREFIX) :]))
        self.messages.put(None)

    def send(self, cmd: str, **data: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **data}) + "\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise SoakError(f"{self.name} is gone ({exc}); its log:\n{self.log_tail()}") from exc

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        try:
            message = self.messages.get(timeout=timeout_s)
        except queue.Empty:
            raise SoakError(f"{self.name}: no {kind!r} within {timeout_s:.0f} s; its log:\n{self.log_tail()}") from None
        if message is None:
            self.messages.put(None)
            raise SoakError(f"{self.name} exited ({self.proc.poll()}) before {kind!r}; its log:\n{self.log_tail()}")
        if message["kind"] != kind:
            raise SoakError(f"{self.name}: expected {kind!r}, got {message['kind']!r}")
        return message

    def ask(self, cmd: str, kind: str, timeout_s: float, **data: Any) -> dict[str, Any]:
        self.send(cmd, **data)
        return self.expect(kind, timeout_s)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-LOG_LINES:])
        except OSError as exc:
            return f"<no log: {exc}>"

    def kill(self) -> None:
        """Kill the process if it still runs (our own child, by its Popen), reap it, close its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT_S)
        self._reader.join(STOP_TIMEOUT_S)  # it ends at EOF, now that the process is gone
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # stdin: the child is gone, a broken pipe is expected


def _dump(params: SoakParams) -> str:
    return json.dumps(asdict(params))


def run_soak(params: SoakParams, log_dir: Path, say_line: Callable[[str], None] = print) -> SoakResult:
    """Run one soak; never raises for a failed check (see :meth:`SoakResult.problems`), raises
    :class:`SoakError` when a node dies or stops answering."""
    started = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    result = SoakResult(params)
    nodes: list[Node] = []
    try:
        first = Node(0, None, params, log_dir)
        nodes.append(first)
        seed = first.expect("ready", READY_TIMEOUT_S)["address"]
        nodes += [Node(i, seed, params, log_dir) for i in range(1, params.nodes)]
        for node in nodes[1:]:
            node.expect("ready", READY_TIMEOUT_S)
        for node in nodes:
            node.send("sync")
        for node in nodes:
            node.expect("synced", READY_TIMEOUT_S)
        for node in nodes:
            node.ask("memory", "memory", READY_TIMEOUT_S)  # resets the peaks
            result.memory[node.name] = NodeMemory()
        load_started = time.monotonic()
        for k in range(params.phases):
            phase_started = time.monotonic()
            per_phase = (params.publishes + params.rpcs) / params.phases
            timeout_s = params.phase_timeout_s + per_phase * params.phase_timeout_per_message_s
            for node in nodes:
                node.send("phase", k=k)
            done = [node.expect("phase_done", timeout_s) for node in nodes]
            expected = sum(d["published"] for d in done)
            _drain(nodes, expected, timeout_s)
            for node in nodes:
                m = node.ask("memory", "memory", timeout_s)
                mem = result.memory[node.name]
                mem.traced.append(m["traced"])
                mem.traced_peak.append(m["peak"])
                mem.rss.append(m["rss"])
                mem.max_rss = m["max_rss"]
            traced = ", ".join(f"{n} {m.traced[-1] / MIB:.1f}" for n, m in result.memory.items())
            took = time.monotonic() - phase_started
            say_line(f"soak phase {k + 1}/{params.phases}: {expected} published, {took:.1f} s; traced MiB {traced}")
        result.load_s = time.monotonic() - load_started
        finals = [node.ask("final", "final", READY_TIMEOUT_S) for node in nodes]
        _account(result, finals, nodes)
        for node in nodes:
            node.ask("stop", "stopped", STOP_TIMEOUT_S)
    finally:
        for node in nodes:
            node.kill()
    result.wall_s = time.monotonic() - started
    return result


def _drain(nodes: list[Node], expected: int, timeout_s: float) -> None:
    """Wait until every publish made so far was delivered and every node is idle (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = [node.ask("counts", "counts", timeout_s) for node in nodes]
        delivered = sum(sum(c["delivered"]) for c in counts)
        if delivered >= expected and all(c["idle"] for c in counts):
            return
        if time.monotonic() > deadline:
            raise SoakError(f"{delivered} of {expected} publishes delivered after {timeout_s:.0f} s: {counts}")
        time.sleep(POLL_S)


def _account(result: SoakResult, finals: list[dict[str, Any]], nodes: list[Node]) -> None:
    params = result.params
    result.published = sum(f["published"] for f in finals)
    result.rpcs_answered = sum(f["answered"] for f in finals)
    result.rpc_errors = [e for f in finals for e in f["errors"]]
    counts = [node.ask("counts", "counts", READY_TIMEOUT_S) for node in nodes]
    result.duplicates = sum(c["duplicates"] for c in counts)
    result.out_of_order = sum(c["out_of_order"] for c in counts)
    result.bad_payloads = sum(c["bad_payloads"] for c in counts)
    result.lost_counters = {node.name: f["lost"] for node, f in zip(nodes, finals, strict=True)}
    result.growth_sites = {node.name: f["growth"] for node, f in zip(nodes, finals, strict=True)}
    for origin in range(params.nodes):
        n = share(params.publishes, params.nodes, origin)
        maps = [int.from_bytes(base64.b64decode(f["bitmaps"][origin]), "little") for f in finals]
        union = 0
        for m in maps:
            result.duplicates += (union & m).bit_count()  # delivered on two nodes
            union |= m
            result.delivered += m.bit_count()
        result.missing += n - union.bit_count()
        all_sizes = sizes(params, origin, "publish", n)
        result.bytes_published += sum(all_sizes)
        result.largest = max(result.largest, max(all_sizes, default=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._soak_driver", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1 000 000 publishes, 100 000 calls, up to 1 MiB")
    parser.add_argument("--publishes", type=int, default=None)
    parser.add_argument("--rpcs", type=int, default=None)
    parser.add_argument("--max-size", type=int, default=None, help="largest payload, bytes")
    parser.add_argument("--phases", type=int, default=None)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/agentmesh-soak"))
    parser.add_argument("--node", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed-endpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.node is not None:
        tracemalloc.start()
        logging.basicConfig(
            level=logging.WARNING, format=f"%(asctime)s soak{args.node} %(name)s %(levelname)s %(message)s"
        )
        params = SoakParams(**json.loads(args.params))
        asyncio.run(node_main(args.node, args.seed_endpoint, params))
        return 0
    params = FULL if args.full else QUICK
    overrides = {"publishes": args.publishes, "rpcs": args.rpcs, "max_size": args.max_size, "phases": args.phases}
    params = SoakParams(**{**asdict(params), **{k: v for k, v in overrides.items() if v is not None}})
    result = run_soak(params, args.log_dir)
    print(json.dumps(result.summary(), indent=2))
    return 1 if result.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
