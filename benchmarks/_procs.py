"""Child processes of the benchmarks, and the line protocol they speak with the parent.

The parent starts a child with ``python -m benchmarks._child ROLE CONFIG_JSON`` and talks to it
over pipes: the child prints one JSON object per line on stdout, prefixed with :data:`PREFIX`
(``{"kind": "ready", ...}``, ``{"kind": "done", ...}``, ``{"kind": "error", ...}``), and reads
commands as JSON lines on stdin. Synchronisation is by these lines only, never by sleeping. A child
whose stdin closes (its parent died) exits on its own; the parent kills every child it started, by
its pid, whatever happens (:class:`Children` as a context manager).

Times that cross processes are ``time.monotonic()`` readings: on Linux that is CLOCK_MONOTONIC,
one clock for the whole machine, so a publisher's start and a subscriber's last delivery can be
subtracted.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from ._framework import BenchmarkError

PREFIX = "@@bench "
ROOT = Path(__file__).resolve().parent.parent
# How long a child may take to import, bind and report ready on a loaded 2-core machine.
READY_TIMEOUT_S = 60.0
# Kept from a child's stderr to explain a failure.
STDERR_LINES = 40
# Set to a directory to sample the agentmesh children with py-spy (collapsed stacks, one file per
# process): AGENTMESH_BENCH_PROFILE=/tmp/prof python -m benchmarks publish. Profiling slows them.
PROFILE_ENV = "AGENTMESH_BENCH_PROFILE"
PROFILED_ROLES = ("mesh.", "scale.")  # the agentmesh processes
PROFILE_RATE_HZ = 250
# How long py-spy may take to write its file once its process is gone.
PROFILE_FLUSH_TIMEOUT_S = 30.0


# -- the child's side -----------------------------------------------------------------------------


def say(kind: str, **data: Any) -> None:
    """Report to the parent (child side)."""
    sys.stdout.write(PREFIX + json.dumps({"kind": kind, **data}) + "\n")
    sys.stdout.flush()


def read_command() -> dict[str, Any]:
    """Block until the parent sends a command (child side); exits quietly if the parent is gone."""
    line = sys.stdin.readline()
    if not line:
        os._exit(0)
    command: dict[str, Any] = json.loads(line)
    return command


class CommandReader:
    """Commands from the parent as an asyncio queue (child side); stdin EOF ends the process.

    A thread blocks on stdin, so the event loop pays nothing for listening.
    """

    def __init__(self) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        threading.Thread(target=self._pump, name="bench-stdin", daemon=True).start()

    def _pump(self) -> None:
        for line in sys.stdin:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, json.loads(line))
        os._exit(0)  # the parent closed our stdin or died: nothing left to do

    async def next(self, expected: str | None = None) -> dict[str, Any]:
        command = await self._queue.get()
        if expected is not None and command.get("cmd") != expected:
            raise RuntimeError(f"expected command {expected!r}, got {command!r}")
        return command


# -- the parent's side ----------------------------------------------------------------------------


class Child:
    """One child process and its message stream (parent side)."""

    def __init__(self, role: str, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", role, json.dumps(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # a ^C in the terminal reaches the parent only; it kills us
        )
        self.pid = self.proc.pid
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        threading.Thread(target=self._read_stdout, name=f"bench-{role}-out", daemon=True).start()
        threading.Thread(target=self._read_stderr, name=f"bench-{role}-err", daemon=True).start()
        self.profiler: subprocess.Popen[bytes] | None = None
        profile_dir = os.environ.get(PROFILE_ENV)
        if profile_dir and role.startswith(PROFILED_ROLES):
            self.profiler = _profile(self.pid, Path(profile_dir) / f"{role}-{self.pid}.txt")

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self._messages.put(json.loads(line[len(PREFIX) :]))
            else:
                self._stderr.append("stdout: " + line.rstrip())
        self._messages.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    def _failure(self, what: str) -> BenchmarkError:
        tail = "\n".join(self._stderr) or "(no output)"
        return BenchmarkError(f"child {self.role} (pid {self.pid}) {what}; its last output:\n{tail}")

    def expect(self, kind: str, timeout_s: float) -> dict[str, Any]:
        """The next message of this child, which must be of ``kind``."""
        try:
            message = self._messages.get(timeout=timeout_s)
        except queue.Empty:
            raise self._failure(f"sent no {kind!r} within {timeout_s:g} s") from None
        if message is None:
            self._messages.put(None)
            raise self._failure(f"exited with code {self.proc.wait()} before sending {kind!r}")
        if message["kind"] == "error":
            raise self._failure(f"failed: {message.get('error')}")
        if message["kind"] != kind:
            raise self._failure(f"sent {message['kind']!r} where {kind!r} was expected")
        return message

    def send(self, cmd: str, **data: Any) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **data}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise self._failure(f"is gone (could not send {cmd!r})") from None

    def kill(self) -> None:
        """Kill this child (by its pid) and reap it."""
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        if self.profiler is not None:
            try:
                self.profiler.wait(PROFILE_FLUSH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.profiler.pid, signal.SIGKILL)
                self.profiler.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def _profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """Sample ``pid`` with py-spy until it exits (it must be installed: pip install py-spy)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [
            *(str(py_spy), "record", "--pid", str(pid), "--rate", str(PROFILE_RATE_HZ), "--format", "raw"),
            *("--nonblocking", "--output", str(output)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Children:
    """The children of one repetition; leaving the ``with`` block kills every one of them."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    def spawn(self, role: str, **config: Any) -> Child:
        child = Child(role, config)
        self.children.append(child)
        return child

    def prespawn(self, role: str, **config: Any) -> Child:
        """Start a child that imports its modules now and waits for the rest of its configuration
        (an address not known yet): give it with ``child.send("config", ...)``."""
        return self.spawn(role, await_config=True, **config)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for child in self.children:
            child.kill()


def expect_all(children: Iterable[Child], kind: str, timeout_s: float) -> list[dict[str, Any]]:
    """The next message of each child, all of ``kind``, within one shared deadline."""
    deadline = time.monotonic() + timeout_s
    return [child.expect(kind, max(0.0, deadline - time.monotonic())) for child in children]
