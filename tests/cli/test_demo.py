"""``agentmesh demo`` (what ``make demo`` runs): the four pipeline processes find each other by mDNS
inside a private network namespace that the demo makes, the readings flow to the display with the
spikes clamped and flagged, the summary adds up, and afterwards no namespace and no process of the
demo is left, also when it is interrupted. Where no namespace can be made it refuses in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import ROOT, child_env
from support.netns import Network, unavailable_reason
from support.procs import CLEAN_ENV

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Interpreter starts, four stage processes joining by mDNS, the readings, a graceful stop of each.
DEMO_TIMEOUT_S = 90.0
_NAMESPACE = re.compile(r"network namespace (amesh-demo-\d+-[0-9a-f]+)")
_MESH = re.compile(r"mesh (demo-[0-9a-f]+)")


@pytest.fixture(autouse=True)
def _namespaces_available() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)


def namespaces_of(pid: int) -> list[str]:
    """The namespaces a demo process made (named after its PID): other tests may make their own meanwhile."""
    return sorted(name for name in namespaces() if name.startswith(f"amesh-demo-{pid}-"))


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=15, check=True)
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that mention ``text`` (a demo's random mesh name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # it exited meanwhile
            if text in cmdline and str(os.getpid()) != entry.name:
                found.append(f"{entry.name}: {cmdline}")
    return found


@pytest.fixture
def demo() -> Iterator[list[subprocess.Popen[str]]]:
    """The demo processes a test starts; killed by PID if a test leaves one running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_demo(
    demo: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "mesh", "demo", *args],
        cwd=ROOT,
        env=env or child_env({"AGENTMESH_MESH": "must-not-leak", "AGENTMESH_SECRET_KEY_FILE": "/nonexistent"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    demo.append(proc)
    return proc


def assert_nothing_left(stdout: str) -> None:
    namespace = _NAMESPACE.search(stdout)
    mesh = _MESH.search(stdout)
    assert namespace is not None and mesh is not None, stdout
    assert namespace.group(1) not in namespaces()
    assert processes_mentioning(mesh.group(1)) == []


@pytest.mark.parametrize("isolation", ["netns", "unshare"])
def test_the_demo_runs_the_pipeline_and_prints_its_summary(demo: list[subprocess.Popen[str]], isolation: str) -> None:
    # 20 readings, one every 0.1 s: spikes at readings 6 and 16, each clamped and flagged twice.
    proc = start_demo(demo, "--duration", "2", "--interval", "0.1", "--isolation", isolation)
    stdout, stderr = proc.communicate(timeout=DEMO_TIMEOUT_S)
    assert proc.returncode == 0, stdout + stderr
    lines = stdout.splitlines()
    for stage in ("display", "analysis", "cleaning", "sensor"):
        assert any(line.startswith(f"{stage} ready at tcp://127.0.0.1:") for line in lines), stdout
    displayed = [line for line in lines if re.match(r"display\s+#\d+ lab: ", line)]
    assert len(displayed) == 20, stdout
    assert sum("ALERT" in line for line in lines) == 4
    assert [line.split()[1] for line in lines if line.startswith("cleaning  #")] == ["#6:", "#16:"]
    assert "summary: 20 readings in " in stdout
    rows = {
        line.split()[1]: line.split()[2:] for line in lines if re.match(r"^│ (sensor|cleaning|analysis|display) ", line)
    }
    assert {name: row[1] for name, row in rows.items()} == dict.fromkeys(
        ("sensor", "cleaning", "analysis", "display"), "20"
    )
    assert "2 clamped" in " ".join(rows["cleaning"]) and "4 alerts" in " ".join(rows["display"])
    assert re.search(r"latency from sensor to display: median \d+\.\d ms, max \d+\.\d ms", stdout), stdout
    assert "Traceback" not in stderr and "must-not-leak" not in stdout
    if isolation == "netns":
        assert_nothing_left(stdout)
        assert re.search(r"network namespace amesh-demo-\d+-[0-9a-f]+ removed", stdout)
    else:
        assert processes_mentioning(_MESH.search(stdout).group(1)) == []  # type: ignore[union-attr]
    assert namespaces_of(proc.pid) == []


@pytest.mark.parametrize("how", ["SIGINT to its process group (Ctrl-C)", "SIGTERM"])
def test_an_interrupted_demo_stops_its_processes_and_removes_its_namespace(
    demo: list[subprocess.Popen[str]], how: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-W", "error", "-m", "mesh", "demo", "--duration", "60", "--isolation", "netns"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's foreground job has
    )
    demo.append(proc)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # bounded: the demo prints a reading every 0.25 s, and the test has a timeout
        seen.append(line)
        if line.startswith("display   #2 "):
            break
    else:
        pytest.fail("the demo ended before the display showed reading #2:\n" + "".join(seen) + proc.stderr.read())
    if how == "SIGTERM":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    rest, stderr = proc.communicate(timeout=DEMO_TIMEOUT_S)
    stdout = "".join(seen) + rest
    assert proc.returncode == 130, stdout + stderr
    assert "agentmesh demo: interrupted" in stdout
    # The summary of what happened until then: the readings published so far, at least 3.
    published = re.search(r"summary: (\d+) readings in ", stdout)
    assert published is not None and 3 <= int(published.group(1)) < 240, stdout
    assert_nothing_left(stdout)
    assert namespaces_of(proc.pid) == []


def test_without_a_way_to_make_a_namespace_the_demo_refuses_in_one_line(demo: list[subprocess.Popen[str]]) -> None:
    env = child_env({"PATH": "/nonexistent"})  # neither `ip` nor `unshare` can be found
    proc = start_demo(demo, "--duration", "1", env=env)
    stdout, stderr = proc.communicate(timeout=DEMO_TIMEOUT_S)
    assert proc.returncode == 1, stdout + stderr
    lines = stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentmesh demo: refused: cannot create a private network namespace")
    assert "mDNS must not run on the real network" in lines[0]
    assert namespaces_of(proc.pid) == []


def test_the_inside_half_refuses_to_run_in_a_namespace_with_a_network() -> None:
    """Started by hand in a namespace with an Ethernet interface, the inside half refuses before any mDNS."""
    with Network(1) as network:  # lo and eth0, on a bridge of its own
        result = subprocess.run(
            [*network[0].exec_prefix(), sys.executable, "-W", "error", "-m", "mesh.cli._demo_inside",
             "--pipeline", "examples/pipeline.py", "--mesh", "never"],
            cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert "refused: this network namespace has interfaces other than lo" in result.stderr
    assert result.stdout == ""


def test_make_demo_runs_the_demo_to_its_summary() -> None:
    """`make demo` itself (the set-up step skipped: this interpreter's environment is used)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", "demo",
         f"BIN={Path(sys.executable).parent}", "DEMO_ARGS=--duration 1 --interval 0.1"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "summary: 10 readings in " in result.stdout and "latency from sensor to display: median" in result.stdout
    assert_nothing_left(result.stdout)


def test_a_stage_that_fails_to_start_ends_the_demo_with_its_error(tmp_path: Path) -> None:
    broken = tmp_path / "pipeline.py"
    broken.write_text("raise SystemExit('this stage cannot start')\n")
    with Network(1, loopback_only=True) as network:
        result = subprocess.run(
            [*network[0].exec_prefix(), sys.executable, "-W", "error", "-m", "mesh.cli._demo_inside",
             "--pipeline", str(broken), "--mesh", "broken"],
            cwd=ROOT, env=CLEAN_ENV, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "agentmesh demo: the display stage exited: this stage cannot start" in result.stdout
    assert "summary: 0 readings in " in result.stdout
    assert processes_mentioning(str(broken)) == []
