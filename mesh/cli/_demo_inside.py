"""The inside half of ``agentmesh demo`` (see :mod:`._demo`), run as ``python -m
mesh.cli._demo_inside --pipeline PATH --mesh NAME ...`` inside the private network namespace.

It refuses to start unless its namespace has nothing but ``lo``. It starts the pipeline's stages
from the display up, each waiting for the stages further down (so the sensor's first reading finds
the whole pipeline), shows their output, stops them (by PID, sensor first) once the display showed
the last reading, and prints messages per stage and the latency from sensor to display. Ctrl-C
and SIGTERM stop the stages the same way and print what happened until then. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._demo import DEFAULT_DURATION_S, DEFAULT_INTERVAL_S, INTERRUPTED
from ._netns import NamespaceUnavailable, only_loopback, setup_loopback

# A stage is ready once its interpreter started, it imported the mesh and saw the stages further
# down by mDNS (about 0.1 s); generous for a loaded 2-core machine.
READY_TIMEOUT_S = 30.0
# After the sensor's last reading: its way through three stages takes milliseconds.
DRAIN_TIMEOUT_S = 10.0
# A stage's graceful stop (SIGTERM) and interpreter exit; then SIGKILL.
STOP_TIMEOUT_S = 15.0
# The stages from the display up, and how many stages further down each waits for.
STAGES = (("display", 0), ("analysis", 1), ("cleaning", 2), ("sensor", 3))
COLOURS = {"sensor": "cyan", "cleaning": "yellow", "analysis": "magenta", "display": "green"}
T = TypeVar("T")
_DISPLAYED = re.compile(r"^display\s+#(\d+) ")


class DemoError(RuntimeError):
    """The pipeline misbehaved; the message says what happened."""


@dataclass
class _Stage:
    name: str
    peers: int
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    summary: dict[str, float] | None = None
    stderr: list[str] = field(default_factory=list)


class _Pipeline:
    def __init__(self, pipeline: Path, mesh: str, readings: int, interval_s: float, console: Console) -> None:
        self.pipeline = pipeline
        self.mesh = mesh
        self.readings = readings
        self.interval_s = interval_s
        self.console = console
        self.stages = [_Stage(name, peers) for name, peers in STAGES]
        self.displayed = -1
        self.all_displayed = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []

    async def start(self, stage: _Stage) -> None:
        args = [sys.executable, str(self.pipeline), stage.name, "--mesh", self.mesh, "--peers", str(stage.peers)]
        if stage.name == "sensor":
            args += ["--readings", str(self.readings), "--interval", str(self.interval_s)]
        # A session of its own: Ctrl-C in the terminal reaches the demo, which stops the stages in
        # order, and never the stages directly.
        stage.proc = await asyncio.create_subprocess_exec(
            *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        self.readers += [asyncio.create_task(self._read(stage)), asyncio.create_task(self._read_errors(stage))]
        waiter = asyncio.create_task(stage.ready.wait())
        exited = asyncio.create_task(stage.proc.wait())
        done, _ = await asyncio.wait({waiter, exited}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not stage.ready.is_set():
            if exited in done:
                await asyncio.gather(*self.readers, return_exceptions=True)  # its last words on stderr
            why = "exited" if exited in done else f"was not ready within {READY_TIMEOUT_S} s"
            raise DemoError(f"the {stage.name} stage {why}: {self._tail(stage)}")

    async def _read(self, stage: _Stage) -> None:
        assert stage.proc is not None and stage.proc.stdout is not None
        async for raw in stage.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line.startswith(f"{stage.name} summary "):
                stage.summary = json.loads(line.partition(" summary ")[2])
                continue
            if line.startswith(f"{stage.name} ready"):
                stage.ready.set()
            self.console.print(Text(line, style="bold red" if "ALERT" in line else COLOURS[stage.name]))
            displayed = _DISPLAYED.match(line)
            if displayed is not None:
                self.displayed = max(self.displayed, int(displayed.group(1)))
                if self.displayed >= self.readings - 1:
                    self.all_displayed.set()

    async def _read_errors(self, stage: _Stage) -> None:
        assert stage.proc is not None and stage.proc.stderr is not None
        async for raw in stage.proc.stderr:
            stage.stderr = [*stage.stderr[-19:], raw.decode(errors="replace").rstrip()]

    @staticmethod
    def _tail(stage: _Stage) -> str:
        return "\n".join(stage.stderr) or "(nothing on its stderr)"

    async def stop(self) -> list[str]:
        """SIGTERM every running stage (by PID), sensor first; SIGKILL those that do not stop. The
        problems seen, if any."""
        problems = []
        for stage in reversed(self.stages):
            proc = stage.proc
            if proc is None:
                continue
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
                problems.append(f"the {stage.name} stage ignored SIGTERM for {STOP_TIMEOUT_S} s")
        await asyncio.gather(*self.readers, return_exceptions=True)
        for stage in self.stages:
            if stage.proc is not None and stage.proc.returncode != 0 and not problems:
                problems.append(f"the {stage.name} stage exited with {stage.proc.returncode}: {self._tail(stage)}")
        return problems

    def summary(self, elapsed_s: float) -> Table:
        by_name = {s.name: s.summary or {} for s in self.stages}
        published = by_name["sensor"].get("messages", 0)
        table = Table(title=f"summary: {published:.0f} readings in {elapsed_s:.1f} s", title_justify="left")
        table.add_column("stage")
        table.add_column("messages", justify="right")
        table.add_column("details")
        notes = {
            "sensor": "published to readings",
            "cleaning": f"{by_name['cleaning'].get('clamped', 0):.0f} clamped into 15-35 °C, 20-90 %",
            "analysis": "trend over the last 10, values beyond 2 sd flagged",
            "display": f"{by_name['display'].get('alerts', 0):.0f} alerts",
        }
        for name, _ in reversed(STAGES):
            table.add_row(name, f"{by_name[name].get('messages', 0):.0f}", notes[name])
        return table

    def latency_line(self) -> str:
        display = next(s for s in self.stages if s.name == "display").summary or {}
        if "latency_p50_ms" not in display:
            return "latency from sensor to display: no reading reached the display"
        return (
            f"latency from sensor to display: median {display['latency_p50_ms']:.1f} ms, "
            f"max {display['latency_max_ms']:.1f} ms"
        )


async def run_inside(pipeline: Path, mesh: str, duration_s: float, interval_s: float) -> int:
    console = Console(highlight=False, soft_wrap=True)
    readings = max(1, round(duration_s / interval_s))
    run = _Pipeline(pipeline, mesh, readings, interval_s, console)
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    started = loop.time()
    failure: str | None = None
    try:
        for stage in run.stages:
            await _unless(interrupted, run.start(stage))
        started = loop.time()
        # The sensor publishes every interval: the last reading leaves after readings x interval.
        await _unless(interrupted, asyncio.wait_for(run.all_displayed.wait(), readings * interval_s + DRAIN_TIMEOUT_S))
    except TimeoutError:
        failure = f"the display showed {run.displayed + 1} of {readings} readings in time"
    except DemoError as exc:
        failure = str(exc)
    except _Interrupted:
        failure = "interrupted"
    elapsed = loop.time() - started
    problems = await run.stop()
    console.print(run.summary(elapsed))
    console.print(run.latency_line(), markup=False)
    failure = failure or (problems[0] if problems else None)
    if failure is not None:
        console.print(f"agentmesh demo: {failure}", style="red", markup=False)
        return INTERRUPTED if failure == "interrupted" else 1
    return 0


class _Interrupted(Exception):
    pass


async def _unless(interrupted: asyncio.Event, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, unless ``interrupted`` is set first (then raise _Interrupted)."""
    task = asyncio.ensure_future(work)
    stop = asyncio.create_task(interrupted.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise _Interrupted
    return task.result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.cli._demo_inside")
    parser.add_argument("--pipeline", type=Path, required=True)
    parser.add_argument("--mesh", required=True)
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    parser.add_argument("--setup-loopback", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.setup_loopback:
            setup_loopback()
    except NamespaceUnavailable as exc:
        print(f"agentmesh demo: {exc}", file=sys.stderr)
        return 1
    if not only_loopback():
        print(
            "agentmesh demo: refused: this network namespace has interfaces other than lo, and mDNS must not "
            "run on a real network; run `agentmesh demo`, which makes a private namespace",
            file=sys.stderr,
        )
        return 1
    return asyncio.run(run_inside(args.pipeline, args.mesh, args.duration, args.interval))


if __name__ == "__main__":
    sys.exit(main())
