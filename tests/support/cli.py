"""``python -m mesh ...`` (the ``agentmesh`` command) and example programs as child processes of a
test: started with a controlled environment, read line by line with bounded waits, and always
stopped by their PID (SIGTERM, then SIGKILL) and reaped, whether the test passed or not.

A process may run inside a network namespace (``netns=``: prefixed with ``ip netns exec NS``, which
execs in place, so the PID is the program's own); it then gets ``CLEAN_ENV``, never the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from support.procs import CLEAN_ENV

ROOT = Path(__file__).resolve().parents[2]
# Interpreter start, imports (click, rich, zmq, zeroconf) and a join: generous for a loaded 2-core machine.
START_TIMEOUT_S = 30.0
# A graceful stop (SIGTERM): the node's own bounded stop plus interpreter exit.
STOP_TIMEOUT_S = 20.0
KILL_TIMEOUT_S = 10.0


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without any AGENTMESH_* setting (those must come from the test), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMESH_")}
    env.update(extra or {})
    return env


@dataclass
class Completed:
    code: int
    stdout: str
    stderr: str


@dataclass
class Child:
    """One running program; its stdout is read line by line, its stderr goes to a file."""

    name: str
    proc: asyncio.subprocess.Process
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    expected_code: int | None = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def line(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """The next line of its stdout (without the newline); EOFError if it exited first."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise EOFError(f"{self.name} exited ({await self.proc.wait()}) before printing a line:\n{self.stderr()}")
        line = raw.decode(errors="replace").rstrip("\n")
        self.lines.append(line)
        return line

    async def line_matching(self, prefix: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """Read lines until one starts with ``prefix`` (bounded in time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:  # bounded by the deadline
            line = await self.line(max(0.0, deadline - loop.time()))
            if line.startswith(prefix):
                return line

    async def rest(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Every remaining stdout line, up to its end (the process exits)."""
        assert self.proc.stdout is not None
        data = await asyncio.wait_for(self.proc.stdout.read(), timeout_s)
        lines = data.decode(errors="replace").splitlines()
        self.lines += lines
        return lines

    async def terminate(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM it (by PID) and wait for its exit code; SIGKILL and fail if it ignores SIGTERM."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.expected_code = None
            await _kill(self.proc)
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout_s} s:\n{self.stderr()}") from None

    async def wait(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no stderr: {exc}>"


def _log_file(path: Path) -> BinaryIO:
    # Synchronous on purpose: creating a file takes microseconds.
    return open(path, "wb")


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), KILL_TIMEOUT_S)


class Children:
    """The programs one test starts; an async context manager that stops and reaps them all."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []

    async def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        netns: str | None = None,
    ) -> Child:
        """Start ``python -W error ARGS`` (e.g. ``["-m", "mesh", "node", ...]``)."""
        argv = [sys.executable, "-W", "error", *args]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
            env = CLEAN_ENV if env is None else env
        stderr_path = self._log_dir / f"{len(self._children):02d}-{name}.stderr"
        with _log_file(stderr_path) as stderr:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd or ROOT,
                env=dict(env) if env is not None else child_env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        child = Child(name, proc, stderr_path)
        self._children.append(child)
        return child

    async def run(
        self, name: str, args: Sequence[str], *, timeout_s: float = START_TIMEOUT_S, **options: object
    ) -> Completed:
        """Run to completion (bounded); its exit code, stdout and stderr."""
        child = await self.start(name, args, **options)  # type: ignore[arg-type]
        child.expected_code = None  # the caller checks the code
        try:
            lines = await child.rest(timeout_s)
            code = await child.wait(timeout_s)
        except TimeoutError:
            await _kill(child.proc)
            raise AssertionError(f"{name} did not finish within {timeout_s} s:\n{child.stderr()}") from None
        return Completed(code, "\n".join(lines) + ("\n" if lines else ""), child.stderr())

    def logs(self) -> str:
        return "\n".join(
            f"===== {c.name} (pid {c.pid}, exit {c.proc.returncode}) stdout:\n" + "\n".join(c.lines)
            + f"\n----- stderr:\n{c.stderr()}"
            for c in self._children
        )  # fmt: skip

    async def aclose(self) -> None:
        """SIGTERM every program still running, wait (bounded), SIGKILL the rest; raise if one had
        to be killed or exited with an unexpected code."""
        running = [c for c in self._children if c.proc.returncode is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        stuck = []
        for child in running:
            try:
                await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                stuck.append(child.name)
                await _kill(child.proc)
        bad = [
            f"{c.name}: exit {c.proc.returncode}"
            for c in self._children
            if c.name in stuck or (c.expected_code is not None and c.proc.returncode != c.expected_code)
        ]
        if bad:
            raise AssertionError(f"programs did not stop cleanly: {', '.join(bad)}\n{self.logs()}")

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            # The test failed already: stop everything, and do not hide its failure with ours.
            with contextlib.suppress(AssertionError):
                await self.aclose()
            return
        await self.aclose()
