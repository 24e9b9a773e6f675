"""Entry point of every benchmark child process: ``python -m benchmarks._child ROLE CONFIG_JSON``.

A role (``"<system>.<name>"``, found in ``benchmarks._roles_<system>``) is one process of one
system in one scenario (an AutoGen host, a mesh node that counts deliveries, a raw pyzmq sender,
...). The drivers here are shared by every system, so each system is measured by the same loop and
the same clocks; a system supplies only "publish one message" or "make one call". The protocol,
per driver:

- sink: ``ready`` once it can receive; ``warm`` when the warm-up messages have all arrived;
  ``done`` (with ``at``, a monotonic time) when the timed ones have.
- sender: ``ready``; on command ``warm`` it sends the warm-up messages; on ``go`` it notes the
  time (``start``), sends the timed messages and reports ``sent``.
- caller: ``ready``; on ``go`` it times sequential calls, then calls from 64 concurrent callers,
  and reports ``done`` with p50/p99 and calls/s.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from ._framework import latency_us
from ._procs import CommandReader, read_command, say

# A caller's concurrent phase starts with this many calls untimed, per caller.
CONCURRENT_WARMUP_PER_CALLER = 4


class Counter:
    """Counts deliveries in a sink process and reports the warm-up and the end to the parent."""

    def __init__(self, warm: int, total: int) -> None:
        self.warm = warm
        self.total = total
        self.count = 0

    def hit(self) -> None:
        self.count += 1
        if self.count == self.warm:
            say("warm", at=time.monotonic())
        if self.count == self.total:
            say("done", at=time.monotonic(), count=self.count)

    def start(self) -> None:
        """Report at once whatever a sink that expects nothing would never report."""
        if self.warm == 0:
            say("warm", at=time.monotonic())
        if self.total == 0:
            say("done", at=time.monotonic(), count=0)


async def drive_sender(publish: Callable[[int], Awaitable[Any]], commands: CommandReader) -> None:
    """The sender protocol, for an asyncio sender (``publish(seq)`` sends one message)."""
    say("ready")
    warm = await commands.next("warm")
    for seq in range(warm["n"]):
        await publish(seq)
    go = await commands.next("go")
    gc.collect()
    start = time.monotonic()
    for seq in range(go["n"]):
        await publish(seq)
    say("sent", start=start, end=time.monotonic())


def drive_sender_blocking(publish: Callable[[int], Any]) -> None:
    """The sender protocol, for a blocking sender."""
    say("ready")
    warm = read_command()
    for seq in range(warm["n"]):
        publish(seq)
    go = read_command()
    gc.collect()
    start = time.monotonic()
    for seq in range(go["n"]):
        publish(seq)
    say("sent", start=start, end=time.monotonic())


async def drive_caller(
    call: Callable[[int], Awaitable[Any]],
    commands: CommandReader,
    before_concurrent: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The caller protocol, for an asyncio caller (``call(seq)`` makes one call and awaits the reply;
    ``before_concurrent()`` runs between the sequential and the concurrent phase)."""
    say("ready")
    go = await commands.next("go")
    n, warmup, concurrency = go["n"], go["warmup"], go["concurrency"]
    for seq in range(warmup):
        await call(seq)
    gc.collect()
    clock = time.perf_counter_ns
    samples = [0] * n
    for seq in range(n):
        started = clock()
        await call(seq)
        samples[seq] = clock() - started
    latency = latency_us(samples)
    if before_concurrent is not None:
        await before_concurrent()

    async def caller(first: int, count: int) -> None:
        for seq in range(first, first + count):
            await call(seq)

    await asyncio.gather(*(caller(i * 1_000_000, CONCURRENT_WARMUP_PER_CALLER) for i in range(concurrency)))
    shares = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]
    gc.collect()
    started = clock()
    await asyncio.gather(*(caller(i * 1_000_000, share) for i, share in enumerate(shares)))
    elapsed_s = (clock() - started) / 1e9
    say("done", **latency, per_s=n / elapsed_s)


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies (a safety net under the parent's own
    clean-up, for a parent that is killed with SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def main(argv: list[str]) -> int:
    _die_with_parent()
    if len(argv) != 3:
        print("usage: python -m benchmarks._child ROLE CONFIG_JSON", file=sys.stderr)
        return 2
    role, config = argv[1], json.loads(argv[2])
    # "mesh.sink" is ROLES["sink"] of benchmarks._roles_mesh: a child imports only its own system.
    system, _, name = role.partition(".")
    roles: dict[str, Callable[[dict[str, Any]], Any]] = importlib.import_module(f"benchmarks._roles_{system}").ROLES
    fn = roles.get(name)
    if fn is None:
        print(f"unknown role {role!r}; {system} has {sorted(roles)}", file=sys.stderr)
        return 2
    if config.pop("await_config", False):
        # Started before its peers' addresses were known, so that its imports overlap theirs.
        more = read_command()
        more.pop("cmd")
        config.update(more)
    try:
        result = fn(config)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception as exc:
        traceback.print_exc()
        say("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
