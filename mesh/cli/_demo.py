"""``agentmesh demo`` (``make demo``): the environment-monitoring pipeline of ``examples/pipeline.py``,
four processes that find each other by mDNS, run for a few seconds inside a private loopback-only
network namespace (:mod:`._netns`), then a summary.

Two halves. :func:`run_demo`, here, makes the namespace, runs the inside half
(:mod:`._demo_inside`) in it with an explicit, clean environment, and always removes the namespace
and whatever still runs in it, on Ctrl-C, SIGTERM and errors too. The inside half runs the stages
and prints their output and the summary.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

import click
from rich.console import Console

from ._netns import METHODS, NamespaceUnavailable, PrivateNetwork

DEFAULT_DURATION_S = 10.0
DEFAULT_INTERVAL_S = 0.25  # between two sensor readings: 4 readings a second
# The inside half's graceful stop of its four stages after SIGTERM (each bounded by
# _demo_inside.STOP_TIMEOUT_S; together they take about a second), then SIGKILL and its reaping.
STOP_TIMEOUT_S = 60.0
KILL_TIMEOUT_S = 5.0
# What the processes inside get as their environment: enough to run Python, nothing else (no keys,
# no AGENTMESH_* settings of the caller), plus the terminal's colour settings.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}
PASSED_THROUGH = ("TERM", "COLUMNS", "NO_COLOR", "FORCE_COLOR")
INTERRUPTED = 130  # the exit code of a demo stopped by Ctrl-C or SIGTERM


class DemoError(RuntimeError):
    """The demo could not run or the pipeline misbehaved; the message says what happened."""


def find_pipeline() -> Path:
    """``examples/pipeline.py`` of the source checkout this package runs from.

    Raises:
        DemoError: not a source checkout.
    """
    path = Path(__file__).resolve().parents[2] / "examples" / "pipeline.py"
    if not path.is_file():
        raise DemoError(
            "the demo runs examples/pipeline.py of a source checkout, and this installation has none: "
            "clone the repository and run `make demo` there"
        )
    return path


def clean_env() -> dict[str, str]:
    env = dict(CLEAN_ENV)
    env.update({k: os.environ[k] for k in PASSED_THROUGH if k in os.environ})
    return env


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_demo(
    *, duration_s: float = DEFAULT_DURATION_S, interval_s: float = DEFAULT_INTERVAL_S, isolation: str = "auto"
) -> int:
    """Run the demo in a private network namespace; its exit code (0: the pipeline worked)."""
    console = Console(highlight=False, soft_wrap=True)
    try:
        pipeline = find_pipeline()
        network = PrivateNetwork(isolation)
    except (DemoError, NamespaceUnavailable) as exc:
        console.print(f"agentmesh demo: refused: {exc}", style="red", markup=False)
        return 1
    mesh = f"demo-{secrets.token_hex(3)}"
    where = f"network namespace {network.name}" if network.method == "netns" else "user and network namespaces"
    console.print(
        f"agentmesh demo: four processes (sensor, cleaning, analysis, display) find each other by mDNS in a "
        f"private {where} (loopback only), mesh {mesh}",
        markup=False,
    )
    inside = [sys.executable, "-m", "mesh.cli._demo_inside", "--pipeline", str(pipeline), "--mesh", mesh]
    inside += ["--duration", str(duration_s), "--interval", str(interval_s)]
    if network.needs_loopback_setup:
        inside.append("--setup-loopback")
    # SIGTERM must run the clean-up below, as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with network:
            proc = subprocess.Popen(network.command(inside), env=clean_env())
            try:
                proc.wait()
            except KeyboardInterrupt:
                pass  # the inside half stops its stages and prints what it has (see _stop)
            finally:
                _stop(proc, network)
        if network.method == "netns":
            console.print(f"network namespace {network.name} removed", style="dim", markup=False)
        return proc.returncode if proc.returncode >= 0 else INTERRUPTED
    except NamespaceUnavailable as exc:
        console.print(f"agentmesh demo: {exc}", style="red", markup=False)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(proc: subprocess.Popen[bytes], network: PrivateNetwork) -> None:
    """Stop the inside half if it still runs (Ctrl-C, SIGTERM, an error here): SIGTERM by PID, so
    it stops its stages gracefully and prints what it has; SIGKILL if it does not end in time."""
    if proc.poll() is not None:
        return
    # Under unshare, proc is unshare itself: the inside half is its child (killing unshare would
    # SIGKILL the inside half, skipping the graceful stop).
    targets = _children_of(proc.pid) if network.method == "unshare" else [proc.pid]
    for pid in targets or [proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for wait_s in (STOP_TIMEOUT_S, KILL_TIMEOUT_S):
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.wait(wait_s)
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def _children_of(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@click.command("demo")
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(min=0.5),
    default=DEFAULT_DURATION_S,
    show_default=True,
    help="Seconds of readings.",
)
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.01),
    default=DEFAULT_INTERVAL_S,
    show_default=True,
    help="Seconds between two readings of the sensor.",
)
@click.option("--isolation", type=click.Choice(METHODS), default="auto", show_default=True,
              help="How to make the private network namespace: netns (root and iproute2) or unshare (unprivileged "
                   "user namespaces); auto tries both.")  # fmt: skip
def demo(duration_s: float, interval_s: float, isolation: str) -> None:
    """Run the environment-monitoring pipeline: a sensor, a cleaning, an analysis and a display
    process that find each other by mDNS, for a few seconds, then print a summary (messages per
    stage, latency from sensor to display).

    Everything runs inside a private loopback-only network namespace that the demo creates and
    removes, so its multicast never reaches a real network; where none can be made, it refuses.
    Needs a source checkout (it runs examples/pipeline.py).
    """
    raise SystemExit(run_demo(duration_s=duration_s, interval_s=interval_s, isolation=isolation))
