"""The benchmark framework: registry, timing helpers, statistics, result model and writers.

A :class:`Scenario` is one workload with one or more metrics, run by our system and by each of its
baselines. Each system+repetition is a fresh run (a new event loop and a new runtime). Repetitions
are interleaved across systems, and who goes first rotates, so that slow drift of a shared machine
and the cost of a cold process hit every system alike.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import pkgutil
import platform
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeGuard

Mode = Literal["quick", "full"]
Better = Literal["higher", "lower"]
Values = Mapping[str, float]
SystemFn = Callable[["RunContext"], Awaitable[Values]] | Callable[["RunContext"], Values]

SCHEMA_VERSION = 1
# A repetition that takes longer than this is a hang, not a measurement (async systems only).
DEFAULT_RUN_TIMEOUT_S = 600.0
RATIO_RULE = "throughput: ours / theirs; latency: theirs / ours; > 1 means ours is better"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class BenchmarkError(Exception):
    """A scenario is misdeclared or a run returned unusable figures."""


# -- declaration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One figure a scenario reports, e.g. throughput (higher is better) or p99 latency (lower)."""

    key: str
    label: str
    unit: str
    better: Better

    def ratio(self, ours: float, theirs: float) -> float:
        """Ours relative to a baseline, oriented so that > 1 means ours is better."""
        return ours / theirs if self.better == "higher" else theirs / ours


@dataclass(frozen=True)
class Workload:
    """How much work one repetition does in each mode (``unit`` names what is counted)."""

    quick: int
    full: int
    unit: str = "messages"

    def size(self, mode: Mode) -> int:
        return self.quick if mode == "quick" else self.full


@dataclass(frozen=True)
class RunContext:
    """What a system function is told about the repetition it runs."""

    scenario: str
    system: str
    mode: Mode
    n: int
    repetition: int  # 1-based
    repeat: int


@dataclass(frozen=True)
class System:
    name: str
    label: str
    ours: bool
    fn: SystemFn


@dataclass(frozen=True)
class Target:
    """A bar our system should clear (issue 7's targets): a figure, not a test.

    With a ``baseline``, the bound applies to the oriented ratio of :meth:`Metric.ratio` (> 1:
    ours better), so "p50 <= 0.25x theirs" is ``at_least=4``; without one, it applies to our median.
    """

    metric: str
    baseline: str | None
    text: str
    at_least: float | None = None
    at_most: float | None = None
    # False: the bound is about the full workload only (quick mode reports it as not evaluated).
    in_quick: bool = True

    def bound(self, unit: str) -> str:
        """The bound as text: a ratio (``>= 4x``) or a figure in the metric's unit (``<= 1000 ms``)."""
        suffix = "x" if self.baseline is not None else f" {unit}"
        parts = []
        if self.at_least is not None:
            parts.append(f">= {self.at_least:.3g}{suffix}")
        if self.at_most is not None:
            parts.append(f"<= {self.at_most:.4g}{suffix}")
        return " and ".join(parts)

    def met(self, value: float) -> bool:
        return (self.at_least is None or value >= self.at_least) and (self.at_most is None or value <= self.at_most)


@dataclass
class Scenario:
    """One workload, measured on our system and on each baseline. Create it with :func:`scenario`."""

    name: str
    title: str
    description: str
    metrics: tuple[Metric, ...]
    workload: Workload
    message: str
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    # A measurement of our system alone (e.g. convergence at scale): no baseline, targets only.
    solo: bool = False
    # Run in --quick mode too (False: too slow for a smoke test; --quick says it skipped it).
    in_quick: bool = True
    # Draw this scenario's bar plot (a group with a plot of its own may turn it off).
    plot: bool = True
    systems: list[System] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.name.split(".", 1)[0]

    def system(self, name: str, label: str, *, ours: bool = False) -> Callable[[SystemFn], SystemFn]:
        """Register the decorated function as how ``label`` runs this scenario."""

        def register(fn: SystemFn) -> SystemFn:
            if any(s.name == name for s in self.systems):
                raise BenchmarkError(f"{self.name}: system {name!r} is registered twice")
            if ours and any(s.ours for s in self.systems):
                raise BenchmarkError(f"{self.name}: only one system may be ours=True")
            self.systems.append(System(name, label, ours, fn))
            return fn

        return register

    def check(self) -> None:
        ours = [s for s in self.systems if s.ours]
        if len(ours) != 1 or (len(self.systems) < 2 and not self.solo):
            raise BenchmarkError(
                f"{self.name}: needs exactly one system with ours=True and at least one baseline "
                f"(unless solo=True), has {[s.name for s in self.systems]}"
            )
        names = {s.name for s in self.systems}
        for t in self.targets:
            if t.baseline is not None and t.baseline not in names:
                raise BenchmarkError(f"{self.name}: target {t.text!r} names unknown baseline {t.baseline!r}")

    @property
    def ours(self) -> System:
        return next(s for s in self.systems if s.ours)

    @property
    def baselines(self) -> list[System]:
        return [s for s in self.systems if not s.ours]


REGISTRY: dict[str, Scenario] = {}


def scenario(
    name: str,
    *,
    title: str,
    description: str,
    metrics: Sequence[Metric],
    workload: Workload,
    message: str = "Payload: a dataclass of about 100 bytes",
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
    solo: bool = False,
    in_quick: bool = True,
    plot: bool = True,
) -> Scenario:
    """Declare and register a scenario named ``"<group>.<name>"``; add systems with ``.system()``."""
    if name.count(".") != 1 or not all(name.split(".")):
        raise BenchmarkError(f"scenario name must be '<group>.<name>', got {name!r}")
    if name in REGISTRY:
        raise BenchmarkError(f"scenario {name!r} is declared twice")
    if not metrics or len({m.key for m in metrics}) != len(metrics):
        raise BenchmarkError(f"{name}: needs at least one metric and unique metric keys")
    REGISTRY[name] = sc = Scenario(
        name, title, description, tuple(metrics), workload, message, run_timeout_s, solo, in_quick, plot
    )
    return sc


def target(
    sc: Scenario,
    metric: str,
    baseline: str | None,
    *,
    text: str,
    at_least: float | None = None,
    at_most: float | None = None,
    in_quick: bool = True,
) -> Target:
    """Declare a target on ``sc``: ``metric``'s ratio to ``baseline`` (or our median if None)."""
    if metric not in {m.key for m in sc.metrics}:
        raise BenchmarkError(f"{sc.name}: target on unknown metric {metric!r}")
    if at_least is None and at_most is None:
        raise BenchmarkError(f"{sc.name}: target {text!r} needs at_least or at_most")
    t = Target(metric, baseline, text, at_least, at_most, in_quick)
    sc.targets.append(t)
    return t


GroupPlot = Callable[[Sequence[Mapping[str, Any]], Path], None]
GROUP_PLOTS: dict[str, GroupPlot] = {}


def group_plot(group: str) -> Callable[[GroupPlot], GroupPlot]:
    """Register the decorated function as the plot of a whole group (``<group>-<mode>.png``).

    It is drawn after the run from the group's scenarios in the merged report (their JSON), so
    it also shows the scenarios of the group that an earlier run measured.
    """

    def register(fn: GroupPlot) -> GroupPlot:
        GROUP_PLOTS[group] = fn
        return fn

    return register


# Groups in the order of the report (issue 7's order); any other group follows alphabetically.
GROUP_ORDER = ("publish", "rpc", "inprocess", "fanout", "scale", "curve")


def _group_rank(name: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(name) if name in GROUP_ORDER else len(GROUP_ORDER), name)


def load_groups() -> dict[str, str]:
    """Import every scenario module of this package; returns the groups that failed, with why."""
    package = sys.modules[__package__ or "benchmarks"]
    failed: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: _group_rank(i.name)):
        if info.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"{package.__name__}.{info.name}")
        except ImportError as exc:  # a group whose optional dependency is missing must not hide the others
            failed[info.name] = f"{type(exc).__name__}: {exc}"
    return failed


# -- timing helpers -------------------------------------------------------------------------------


async def time_calls(call: Callable[[], Awaitable[Any]], count: int, *, warmup: int = 0) -> list[int]:
    """Await ``call()`` ``warmup`` times untimed, then ``count`` times; the durations in ns."""
    for _ in range(warmup):
        await call()
    clock = time.perf_counter_ns
    samples = [0] * count
    for i in range(count):
        start = clock()
        await call()
        samples[i] = clock() - start
    return samples


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values."""
    if not sorted_values:
        raise BenchmarkError("percentile of no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_us(samples_ns: Iterable[int], percentiles: Sequence[float] = (50, 99)) -> dict[str, float]:
    """``{"p50_us": ..., "p99_us": ...}`` from durations in nanoseconds."""
    ordered = sorted(samples_ns)
    return {f"p{q:g}_us": percentile(ordered, q) / 1_000 for q in percentiles}


async def wait_for_event(event: asyncio.Event, timeout_s: float, what: str) -> None:
    """Wait for ``event``; a clear error instead of a hang if it does not come in time."""
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
    except TimeoutError:
        raise BenchmarkError(f"timed out after {timeout_s:.0f} s waiting for {what}") from None


# -- statistics and result model ------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        return cls(statistics.median(values), min(values), max(values), len(values))


@dataclass
class SystemResult:
    name: str
    label: str
    ours: bool
    runs: list[dict[str, float]] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)

    def summary(self, key: str) -> Summary:
        return Summary.of([run[key] for run in self.runs])

    def to_json(self, metrics: Sequence[Metric]) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "ours": self.ours,
            "runs": self.runs,
            "wall_s": [round(w, 4) for w in self.wall_s],
            "summary": {m.key: vars(self.summary(m.key)) for m in metrics} if self.runs else {},
        }


@dataclass
class ScenarioResult:
    scenario: Scenario
    mode: Mode
    n: int
    run_id: str
    systems: list[SystemResult]
    error: str | None = None
    plot: str | None = None  # file name of the plot, beside the report

    def ratios(self) -> dict[str, dict[str, float]]:
        ours = next(s for s in self.systems if s.ours)
        if not ours.runs:
            return {}
        return {
            s.name: {m.key: m.ratio(ours.summary(m.key).median, s.summary(m.key).median) for m in self.scenario.metrics}
            for s in self.systems
            if not s.ours and s.runs
        }

    def target_results(self) -> list[dict[str, Any]]:
        """Each target of the scenario with the figure it is judged on and whether it is met."""
        ours = next(s for s in self.systems if s.ours)
        ratios = self.ratios()
        out: list[dict[str, Any]] = []
        for t in self.scenario.targets:
            value: float | None = None
            if self.error is None and ours.runs:
                if t.baseline is None:
                    value = ours.summary(t.metric).median
                elif t.baseline in ratios:
                    value = ratios[t.baseline][t.metric]
            evaluated = value is not None and (t.in_quick or self.mode == "full")
            out.append(
                {
                    "text": t.text,
                    "metric": t.metric,
                    "baseline": t.baseline,
                    "bound": t.bound(next(m.unit for m in self.scenario.metrics if m.key == t.metric)),
                    "value": value,
                    "met": t.met(value) if evaluated and value is not None else None,
                    "note": None if evaluated else ("not measured" if value is None else "full mode only"),
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        sc = self.scenario
        return {
            "name": sc.name,
            "group": sc.group,
            "title": sc.title,
            "description": sc.description,
            "run_id": self.run_id,
            "workload": {"n": self.n, "unit": sc.workload.unit, "message": sc.message},
            "metrics": [vars(m) for m in sc.metrics],
            "ours": sc.ours.name,
            "solo": sc.solo,
            "systems": [s.to_json(sc.metrics) for s in self.systems],
            "ratios": self.ratios(),
            "targets": self.target_results(),
            "error": self.error,
            "plot": self.plot,
        }


def _finite_positive(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def run_scenario(sc: Scenario, mode: Mode, repeat: int, run_id: str, log: Callable[[str], None]) -> ScenarioResult:
    """Run every system of ``sc`` ``repeat`` times, interleaved; stops the scenario at the first failure."""
    sc.check()
    n = sc.workload.size(mode)
    result = ScenarioResult(sc, mode, n, run_id, [SystemResult(s.name, s.label, s.ours) for s in sc.systems])
    other = sc.workload.size(_other_mode(mode))
    log(f"{sc.name} | workload: {n:,} {sc.workload.unit} per repetition ({_other_mode(mode)} mode: {other:,})")
    pairs = list(zip(sc.systems, result.systems, strict=True))
    for rep in range(1, repeat + 1):
        # Rotate who goes first, so no system always pays for a cold process or a warm one.
        shift = (rep - 1) % len(pairs)
        for system, sys_result in pairs[shift:] + pairs[:shift]:
            ctx = RunContext(sc.name, system.name, mode, n, rep, repeat)
            try:
                values, wall = _run_once(sc, system, ctx)
            except Exception as exc:
                result.error = f"{system.name} repetition {rep}: {type(exc).__name__}: {exc}"
                log(f"{sc.name} | {system.name} | rep {rep}/{repeat} | FAILED: {type(exc).__name__}: {exc}")
                return result
            sys_result.runs.append(values)
            sys_result.wall_s.append(wall)
            figures = ", ".join(f"{m.label} {format_value(values[m.key])} {m.unit}" for m in sc.metrics)
            log(f"{sc.name} | {system.name} | rep {rep}/{repeat} | {figures} | {wall:.2f} s")
    return result


def _other_mode(mode: Mode) -> Mode:
    return "full" if mode == "quick" else "quick"


async def _within(coro: Awaitable[Any], timeout_s: float, what: str) -> Any:
    scope = asyncio.timeout(timeout_s)
    try:
        async with scope:
            return await coro
    except TimeoutError:
        if scope.expired():
            raise BenchmarkError(f"{what} did not finish within {timeout_s:g} s (run_timeout_s)") from None
        raise


def _run_once(sc: Scenario, system: System, ctx: RunContext) -> tuple[dict[str, float], float]:
    gc.collect()  # garbage left by the previous run must not be collected on this one's clock
    started = time.perf_counter()
    if inspect.iscoroutinefunction(system.fn):
        raw: Any = asyncio.run(_within(system.fn(ctx), sc.run_timeout_s, f"{sc.name}/{system.name}"))
    else:
        raw = system.fn(ctx)
    wall = time.perf_counter() - started
    if not isinstance(raw, Mapping):
        raise BenchmarkError(f"{sc.name}/{system.name} returned {type(raw).__name__}, expected a mapping")
    values: dict[str, float] = {}
    for m in sc.metrics:
        value = raw.get(m.key)
        if not _finite_positive(value):
            raise BenchmarkError(f"{sc.name}/{system.name}: metric {m.key!r} is {value!r}, not a positive number")
        values[m.key] = float(value)
    return values, wall


# -- machine --------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    try:
        import zmq

        pyzmq: str | None = zmq.__version__
        libzmq: str | None = zmq.zmq_version()
    except ImportError:
        pyzmq = libzmq = None
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity else os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pyzmq": pyzmq,
        "libzmq": libzmq,
        "autogen_core": _version("autogen-core"),
        "autogen_ext": _version("autogen-ext"),
        "grpcio": _version("grpcio"),
        # Other work on the machine skews absolute figures (ratios measured together suffer less).
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "agentmesh": _version("agentmesh-zmq"),
        "git": _git_commit(),
    }


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Run:
    """One invocation: its id (a UTC timestamp), when, where and how it ran."""

    run_id: str
    mode: Mode
    repeat: int
    started: str
    command: list[str]
    machine: dict[str, Any]
    finished: str | None = None

    @classmethod
    def begin(cls, mode: Mode, repeat: int, argv: Sequence[str]) -> Run:
        now = datetime.now(UTC)
        return cls(
            now.strftime("%Y%m%dT%H%M%SZ"), mode, repeat, now.isoformat(timespec="seconds"), list(argv), machine_info()
        )

    def end(self) -> None:
        self.finished = datetime.now(UTC).isoformat(timespec="seconds")


def report_json(
    run: Run, results: Sequence[ScenarioResult], group_plots: Mapping[str, str] | None = None
) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "mode": run.mode,
        "run_id": run.run_id,
        "date": run.started,
        "finished": run.finished,
        "repeat": run.repeat,
        "command": run.command,
        "machine": run.machine,
        "ratio_rule": RATIO_RULE,
        "runs": {run.run_id: vars(run)},
        "scenarios": [r.to_json() for r in results],
        "group_plots": dict(group_plots or {}),
    }


def merge_reports(previous: Mapping[str, Any] | None, current: dict[str, Any]) -> dict[str, Any]:
    """``current`` plus the scenarios of ``previous`` that this run did not measure.

    ``latest-<mode>.json`` is the file people read and keep in git: running one group must not
    drop the other groups' figures. Every scenario keeps the ``run_id`` it was measured in, and
    ``runs`` keeps that run's machine, so carried-over figures stay attributable.
    """
    if not previous or previous.get("schema") != SCHEMA_VERSION or previous.get("mode") != current["mode"]:
        return current
    merged = dict(current)
    names = {s["name"] for s in current["scenarios"]}
    kept = [s for s in previous.get("scenarios", []) if s.get("name") not in names and s.get("name") in REGISTRY]
    merged["scenarios"] = sorted(current["scenarios"] + kept, key=lambda s: _order(s["name"]))
    used = {s["run_id"] for s in merged["scenarios"]}
    runs = {k: v for k, v in previous.get("runs", {}).items() if k in used}
    runs.update(current["runs"])
    merged["runs"] = runs
    groups = {s["group"] for s in merged["scenarios"]}
    plots = {g: f for g, f in previous.get("group_plots", {}).items() if g in groups}
    plots.update(current.get("group_plots", {}))
    merged["group_plots"] = plots
    return merged


def _order(name: str) -> tuple[int, str]:
    order = list(REGISTRY)
    return (order.index(name), name) if name in order else (len(order), name)


def format_value(value: float) -> str:
    if value >= 1_000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _machine_line(run: Mapping[str, Any]) -> str:
    m = run["machine"]
    return (
        f"{m['cpu_model']} ({m['usable_cpus']} of {m['cpu_count']} CPUs), {m['python']}, "
        f"pyzmq {m['pyzmq']} / libzmq {m['libzmq']}, autogen-core {m['autogen_core']}, "
        f"autogen-ext {m.get('autogen_ext')}, grpcio {m.get('grpcio')}, "
        f"agentmesh {m['agentmesh']} ({m['git']}); load average at start {m.get('load_average_at_start')}; "
        f"{run['repeat']} repetitions; `{' '.join(run['command'])}`"
    )


def _format_target_value(t: Mapping[str, Any], unit: str) -> str:
    value = t["value"]
    if value is None:
        return "—"
    return f"{value:.2f}x" if t["baseline"] is not None else f"{format_value(value)} {unit}"


def markdown(report: Mapping[str, Any]) -> str:
    """The report as markdown: one table with a row per scenario, metric and system, then targets."""
    lines = [
        f"# agentmesh benchmarks ({report['mode']} mode)",
        "",
        "Median of the repetitions, min-max beside it. Ratio: ours vs that baseline, oriented so "
        "that > 1 means ours is better (throughput: ours / theirs; latency: theirs / ours).",
        "",
        "| Scenario | Metric | System | Median | Min-max | Ratio (> 1: ours better) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for sc in report["scenarios"]:
        if sc["error"] is not None:
            lines.append(f"| {sc['name']} | — | — | — | — | failed: {sc['error']} |")
            continue
        ours = next(s for s in sc["systems"] if s["ours"])
        solo = len(sc["systems"]) == 1
        for m in sc["metrics"]:
            metric = f"{m['label']} ({m['unit']}, {m['better']} is better)"
            for s in sc["systems"]:
                st = s["summary"][m["key"]]
                label = f"**{s['label']}** (ours)" if s is ours else s["label"]
                ours_mark = "no baseline" if solo else "—"
                ratio = ours_mark if s is ours else f"{sc['ratios'][s['name']][m['key']]:.2f}x"
                spread = f"{format_value(st['min'])}-{format_value(st['max'])}"
                lines.append(
                    f"| {sc['name']} | {metric} | {label} | {format_value(st['median'])} | {spread} | {ratio} |"
                )
    targets = [(sc, t) for sc in report["scenarios"] for t in sc.get("targets", [])]
    if targets:
        lines += [
            "",
            "## Targets",
            "",
            "Issue 7's bars, judged on the medians above (a ratio is oriented: > 1 means ours is better).",
            "",
            "| Target | Scenario | Figure | Bound | Met |",
            "|---|---|---:|---:|---|",
        ]
        for sc, t in targets:
            unit = next(m["unit"] for m in sc["metrics"] if m["key"] == t["metric"])
            met = {True: "met", False: "**missed**", None: t.get("note") or "—"}[t["met"]]
            figure = _format_target_value(t, unit)
            lines.append(f"| {t['text']} | {sc['name']} | {figure} | {t['bound']} | {met} |")
    lines += ["", "## Scenarios", ""]
    for sc in report["scenarios"]:
        w = sc["workload"]
        lines.append(
            f"- **{sc['name']}** — {sc['title']}. {sc['description']} "
            f"Workload: {w['n']:,} {w['unit']}; message: {w['message']}. Run {sc['run_id']}."
        )
    lines += ["", "## Machine", ""]
    for run_id, run in sorted(report["runs"].items()):
        lines.append(f"- Run {run_id} ({run['started']}): {_machine_line(run)}")
    plots = [(sc["name"], sc["plot"]) for sc in report["scenarios"] if sc.get("plot")]
    plots += sorted(report.get("group_plots", {}).items())
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in plots]
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader never sees half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dumps_json(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def plot(result: ScenarioResult, path: Path) -> None:
    """A bar per system and a panel per metric: medians, with min-max as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = result.scenario
    metrics = sc.metrics
    # At most two panels side by side, so that four systems per panel stay legible.
    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    width = max(6.4, cols * (1.3 * len(result.systems) + 1.2))
    fig, axes = plt.subplots(rows, cols, figsize=(width, 4.0 * rows + 0.4), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    labels = [textwrap.fill(s.label, 16) for s in result.systems]
    colours = ["#1f6fb4" if s.ours else "#9a9a9a" for s in result.systems]
    ratios = result.ratios()
    for ax, m in zip(axes.flat, metrics, strict=False):
        stats = [s.summary(m.key) for s in result.systems]
        medians = [st.median for st in stats]
        errors = [[st.median - st.min for st in stats], [st.max - st.median for st in stats]]
        bars = ax.bar(range(len(stats)), medians, yerr=errors, capsize=4, color=colours)
        for bar, s, st in zip(bars, result.systems, stats, strict=True):
            r = 0.0 if s.ours else ratios[s.name][m.key]
            note = "ours" if s.ours else f"{r:.2f}x (ours {'better' if r >= 1 else 'worse'})"
            top = (bar.get_x() + bar.get_width() / 2, st.max)
            note = note.replace(" (", "\n(")
            ax.annotate(note, top, ha="center", va="bottom", xytext=(0, 4), textcoords="offset points", fontsize=7)
        ax.set_xticks(range(len(stats)), labels, fontsize=7)
        ax.set_ylabel(f"{m.unit} ({m.better} is better)")
        ax.set_title(m.label, fontsize=10)
        ax.margins(y=0.15)
    runs = len(result.systems[0].runs)
    fig.suptitle(f"{sc.name}: {sc.title}\nmedian of {runs}, whiskers min-max, n={result.n:,}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
