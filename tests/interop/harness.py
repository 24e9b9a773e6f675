"""Child processes of the interop tests (a stock AutoGen host, stock workers, bridge processes) that
never outlive a test, and the bridge timings the tests use."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mesh.bridge import BridgeConfig

HERE = Path(__file__).parent
# A child printing its ready line: interpreter start and imports (grpc, autogen) on a loaded 2-core machine.
READY_TIMEOUT_S = 60.0
# A child stopping after its stdin closed and SIGTERM.
STOP_TIMEOUT_S = 10.0

FAST_BRIDGE = BridgeConfig(
    rpc_timeout_s=10.0,
    call_timeout_s=3.0,
    connect_timeout_s=3.0,
    poll_interval_s=0.2,
    reconnect_initial_s=0.05,
    reconnect_max_s=0.5,
    supervise_interval_s=0.2,
)


class Child:
    """One child process: its JSON stdout lines as they arrive, and its log (stderr) file."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log_path: Path, loop: asyncio.AbstractEventLoop):
        self.name = name
        self.popen = popen
        self.log_path = log_path
        self.lines: list[dict[str, Any]] = []
        self._loop = loop
        self._arrived = asyncio.Event()
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"text": raw.decode(errors="replace")}
            try:
                self._loop.call_soon_threadsafe(self._add, line)
            except RuntimeError:
                return  # the test's loop is closed: nobody is listening any more

    def _add(self, line: dict[str, Any]) -> None:
        self.lines.append(line)
        self._arrived.set()
        self._arrived = asyncio.Event()

    def count(self, predicate: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for line in self.lines if predicate(line))

    async def expect(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0, what: str = "a line"
    ) -> dict[str, Any]:
        """The first line (already printed or still to come) for which ``predicate`` holds."""
        try:
            async with asyncio.timeout(timeout):
                while True:  # bounded by the timeout
                    for line in self.lines:
                        if predicate(line):
                            return line
                    await self._arrived.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.name} printed no {what} within {timeout} s; it printed {self.lines}") from None

    def send(self, command: dict[str, Any]) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(command).encode() + b"\n")
        self.popen.stdin.flush()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"<no log: {exc}>"

    def join_reader(self, timeout: float) -> None:
        self._reader.join(timeout)


def _spawn(argv: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    # Synchronous on purpose: fork and exec take milliseconds; waiting for readiness is async.
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=HERE
        )


class Children:
    """The child processes of one test; each is stopped (stdin closed, SIGTERM, then SIGKILL, by PID)
    and reaped at the end, whether the test passed or not."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._children: list[Child] = []

    async def start(self, name: str, argv: Sequence[str], *, ready: str) -> Child:
        """Start ``python *argv`` and return once it printed a JSON line with the key ``ready``."""
        log_path = self._log_dir / f"{len(self._children):02d}-{name}.log"
        popen = _spawn(argv, log_path)
        child = Child(name, popen, log_path, asyncio.get_running_loop())
        self._children.append(child)
        try:
            await child.expect(lambda line: ready in line, READY_TIMEOUT_S, f"ready line ({ready!r})")
        except TimeoutError:
            self.kill(child)
            raise RuntimeError(f"{name} did not start; its log:\n{child.log()}") from None
        return child

    async def host(self, port: int = 0, *extra: str) -> tuple[Child, str]:
        """A stock AutoGen host; returns it and its address."""
        child = await self.start("host", [str(HERE / "host_main.py"), "--port", str(port), *extra], ready="port")
        return child, f"127.0.0.1:{child.lines[0]['port']}"

    async def worker(self, host: str, *extra: str, name: str = "worker") -> Child:
        """A stock AutoGen worker with the standard agents (see worker_main.py)."""
        return await self.start(name, [str(HERE / "worker_main.py"), "--host", host, *extra], ready="ready")

    def kill(self, child: Child) -> None:
        """SIGKILL ``child`` now (by PID, if it has not been reaped)."""
        if child.popen.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.popen.wait(STOP_TIMEOUT_S)

    def logs(self) -> str:
        return "\n".join(
            f"===== {c.name} (pid {c.pid}, exit {c.popen.returncode}) =====\n{c.log()}" for c in self._children
        )

    async def aclose(self) -> None:
        for child in self._children:
            if child.popen.poll() is None and child.popen.stdin is not None:
                try:
                    child.popen.stdin.close()
                except OSError:
                    pass
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self._children:
            try:
                await asyncio.to_thread(child.popen.wait, max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if child.popen.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.popen.wait(STOP_TIMEOUT_S)
            await asyncio.to_thread(child.join_reader, STOP_TIMEOUT_S)
            if child.popen.stdout is not None:
                child.popen.stdout.close()
