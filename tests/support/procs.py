"""Start and stop mesh nodes in their own OS processes (``node_main.py``) from async tests.

:class:`NodeProcesses` is an async context manager: every process it started is stopped (SIGTERM,
then SIGKILL by PID after a bound) and reaped when it exits, whether the test passed or failed. It
only ever signals the PIDs of the processes it started and has not reaped yet.

A node can run inside a network namespace (``netns=``: the command is prefixed with
``ip netns exec NS``, which execs it in place, so the PID is the node's own). Such a node gets an
explicit, minimal environment (``CLEAN_ENV``), never the test process's: variables a test sets for
itself (``AGENTMESH_MDNS_INTERFACES``, keys...) must not leak into it. With ``control=True`` the
test drives the node over its stdin/stdout (:meth:`NodeProcess.request`), which works across
namespaces where the test process has no network route.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.to_thread

NODE_MAIN = Path(__file__).with_name("node_main.py")
# Bound on a node process printing its address: interpreter start, imports and the join with its seed
# (join_timeout_s at most). Generous for a loaded 2-core machine.
READY_TIMEOUT_S = 30.0
# Bound on a graceful stop (SIGTERM): the node's own stop bounds plus interpreter exit.
STOP_TIMEOUT_S = 20.0
# Bound on reaping a process after SIGKILL.
KILL_TIMEOUT_S = 10.0
# Bound on a control request's answer (calls inside the node carry their own, shorter, timeouts).
REQUEST_TIMEOUT_S = 30.0
# What a node in a namespace gets as its environment: enough to run Python, nothing from the test.
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class NodeProcessError(RuntimeError):
    """A node process failed to start or to stop; the message carries its log."""


class ControlError(RuntimeError):
    """A control request failed inside the node (the message is the node's error) or got no answer."""


@dataclass
class NodeProcess:
    """One running ``node_main.py``: what it printed when ready, and where its log goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    node_id: str = ""
    incarnation: int = 0
    netns: str | None = None
    expected_returncode: int | None = 0
    _answers: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _start_reader(self) -> None:
        """Read the node's stdout lines (control answers) in a daemon thread; None marks EOF."""

        def read() -> None:
            assert self.popen.stdout is not None
            try:
                for line in self.popen.stdout:
                    try:
                        self._answers.put(json.loads(line))
                    except ValueError:
                        self._answers.put({"id": None, "ok": False, "error": f"not JSON: {line[:200]!r}"})
            except (OSError, ValueError):
                pass  # the pipe was closed after the process exited
            self._answers.put(None)

        threading.Thread(target=read, name=f"control-{self.name}", daemon=True).start()

    async def request(self, op: str, *, timeout_s: float = REQUEST_TIMEOUT_S, **fields: Any) -> Any:
        """Send one control request (see ``node_main.control``) and return its result.

        Raises:
            ControlError: the node answered with an error, exited, or did not answer in time.
        """
        async with self._lock:  # one request at a time: answers are matched to requests in order
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n"
            stdin = self.popen.stdin
            if stdin is None or self.popen.poll() is not None:
                raise ControlError(f"{self.name}: the node process has exited ({self.popen.returncode})")
            try:
                stdin.write(line)
                stdin.flush()
            except OSError as exc:
                raise ControlError(f"{self.name}: cannot send {op!r}: {exc}") from exc
            deadline = time.monotonic() + timeout_s
            while True:  # bounded by the deadline; skips answers to earlier requests that timed out
                remaining = deadline - time.monotonic()
                try:
                    answer = await anyio.to_thread.run_sync(self._answers.get, True, max(0.0, remaining))
                except queue.Empty:
                    raise ControlError(f"{self.name}: no answer to {op!r} within {timeout_s} s") from None
                if answer is None:
                    self._answers.put(None)  # EOF stays visible to later requests
                    raise ControlError(f"{self.name}: the node process exited while answering {op!r}")
                if answer.get("id") == request_id:
                    break
            if not answer.get("ok"):
                raise ControlError(f"{self.name}: {op} failed: {answer.get('error')}")
            return answer.get("result")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"


def _spawn(args: list[str], log_path: Path, env: Mapping[str, str] | None) -> subprocess.Popen[bytes]:
    # Synchronous on purpose: fork and exec take milliseconds; the long wait (for the node to be
    # ready) happens in a worker thread. stdin stays open for the child's --exit-on-stdin-eof.
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=None if env is None else dict(env)
        )


class NodeProcesses:
    """The node processes of one test; see the module docstring."""

    def __init__(self, log_dir: Path, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._log_dir = log_dir
        self._ready_timeout_s = ready_timeout_s
        self._procs: list[NodeProcess] = []
        self._starts = 0

    @property
    def processes(self) -> list[NodeProcess]:
        return list(self._procs)

    async def start(
        self,
        name: str,
        *,
        seeds: Sequence[str] = (),
        node_id: str | None = None,
        factories: Sequence[str] = (),
        instances: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        control: bool = False,
    ) -> NodeProcess:
        """Start ``node_main.py`` and return once it printed its address (bounded).

        Args:
            netns: run it inside this network namespace (``ip netns exec``).
            env: its environment; default: the test's own, or ``CLEAN_ENV`` inside a namespace.
            control: let the test drive it with :meth:`NodeProcess.request`.
        """
        # Debug logs cost little (a few lines) and are only read when a test fails.
        args = [sys.executable, str(NODE_MAIN), "--name", name, "--exit-on-stdin-eof", "--log-level", "DEBUG"]
        if control:
            args.append("--control")
        for seed in seeds:
            args += ["--seed", seed]
        if node_id is not None:
            args += ["--node-id", node_id]
        for factory in factories:
            args += ["--factory", factory]
        for instance in instances:
            args += ["--instance", instance]
        args += list(extra_args)
        if netns is not None:
            args = ["ip", "netns", "exec", netns, *args]
            env = CLEAN_ENV if env is None else env
        self._starts += 1
        log_path = self._log_dir / f"{self._starts:02d}-{name}.log"
        popen = _spawn(args, log_path, env)
        proc = NodeProcess(name, popen, log_path, netns=netns)
        self._procs.append(proc)
        assert popen.stdout is not None
        line = b""
        with anyio.move_on_after(self._ready_timeout_s):
            # readline blocks a worker thread, never the event loop (the test's own node keeps
            # answering probes meanwhile); if we give up, killing the process ends the read.
            line = await anyio.to_thread.run_sync(popen.stdout.readline, abandon_on_cancel=True)
        if not line:
            await self._kill_and_reap(proc)
            exited = popen.returncode
            failure = (
                f"exited with code {exited} before printing its address"
                if exited is not None and exited != -signal.SIGKILL
                else f"did not print its address within {self._ready_timeout_s} s"
            )
            raise NodeProcessError(f"node process {name} (pid {proc.pid}) {failure}; its log:\n{proc.log()}")
        try:
            ready = json.loads(line)
            proc.address, proc.node_id = ready["address"], ready["node_id"]
            proc.incarnation = ready.get("incarnation", 0)
            assert ready["pid"] == popen.pid, f"pid {ready['pid']} printed by process {popen.pid}"
        except (ValueError, KeyError, TypeError) as exc:
            await self._kill_and_reap(proc)
            raise NodeProcessError(f"node process {name} printed {line!r}, not its address: {exc}") from exc
        if control:
            proc._start_reader()
        return proc

    def kill(self, proc: NodeProcess) -> None:
        """SIGKILL ``proc`` now (by PID, only if it has not been reaped); reap it with :meth:`wait`."""
        proc.expected_returncode = -signal.SIGKILL
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)

    async def wait(self, proc: NodeProcess, timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for ``proc`` to exit; its exit code, or None if it still runs."""
        try:
            return await anyio.to_thread.run_sync(proc.popen.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return None

    async def stop(self, proc: NodeProcess, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM ``proc`` and wait for it to exit (SIGKILL after ``timeout_s``); its exit code."""
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            if await self.wait(proc, timeout_s) is None:
                await self._kill_and_reap(proc)
                raise NodeProcessError(
                    f"node process {proc.name} (pid {proc.pid}) ignored SIGTERM for {timeout_s} s; its log:\n"
                    f"{proc.log()}"
                )
        self._close_pipes(proc)
        return proc.popen.returncode

    async def _kill_and_reap(self, proc: NodeProcess) -> None:
        proc.expected_returncode = None  # reported by the caller: not again by aclose()
        if proc.popen.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        await self.wait(proc, KILL_TIMEOUT_S)
        self._close_pipes(proc)

    @staticmethod
    def _close_pipes(proc: NodeProcess) -> None:
        if proc.popen.returncode is None:
            return  # never close a pipe a worker thread may still be reading
        for pipe in (proc.popen.stdin, proc.popen.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass  # stdin: the child is gone, a broken pipe is expected

    def logs(self) -> str:
        """Every process's log, with its PID, namespace and exit code."""
        return "\n".join(
            f"===== {p.log_path} (pid {p.pid}{f', netns {p.netns}' if p.netns else ''}, "
            f"exit {p.popen.returncode}) =====\n{p.log()}"
            for p in self._procs
        )

    async def aclose(self) -> None:
        """Stop every process still running (all at once) and reap them all; raise if one did not
        stop on SIGTERM or exited with an unexpected code."""
        stuck: list[NodeProcess] = []
        try:
            running = [p for p in self._procs if p.popen.poll() is None]
            for proc in running:
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for proc in running:
                await self.wait(proc, max(0.0, deadline - time.monotonic()))
        finally:
            # Whatever happened above (a cancel, a timeout): nothing we started outlives the test.
            for proc in self._procs:
                if proc.popen.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.popen.wait(KILL_TIMEOUT_S)
                    stuck.append(proc)
                self._close_pipes(proc)
        bad = [
            p
            for p in self._procs
            if p in stuck or (p.expected_returncode is not None and p.popen.returncode != p.expected_returncode)
        ]
        if bad:
            names = ", ".join(f"{p.name} (pid {p.pid}): exit {p.popen.returncode}" for p in bad)
            raise NodeProcessError(f"node processes did not stop cleanly on SIGTERM: {names}\n{self.logs()}")

    async def __aenter__(self) -> NodeProcesses:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
