"""``python -m benchmarks``: run scenarios against their baselines and write the results.

Prints one line per step; writes ``<run id>-<mode>.json``, ``latest-<mode>.json`` and
``latest-<mode>.md`` (and, in full mode or with ``--plots``, a PNG per scenario) into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._framework import (
    GROUP_PLOTS,
    REGISTRY,
    RESULTS_DIR,
    Mode,
    Run,
    Scenario,
    ScenarioResult,
    dumps_json,
    load_groups,
    markdown,
    merge_reports,
    plot,
    read_json,
    report_json,
    run_scenario,
    write_text,
)

MIN_REPEAT = 3  # a median with a min-max needs at least three runs to mean anything


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run agentmesh and its baselines side by side on the same workloads.",
    )
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenario or group names (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small workloads, a smoke test of seconds")
    mode.add_argument("--full", action="store_true", help="the real workloads (the default)")
    p.add_argument("--repeat", type=int, default=MIN_REPEAT, help=f"repetitions per system (>= {MIN_REPEAT})")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results directory (default: {RESULTS_DIR})")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument(
        "--plots",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write a PNG per scenario (default: in full mode only)",
    )
    return p


def _select(tokens: Sequence[str], failed: dict[str, str], parser: argparse.ArgumentParser) -> list[Scenario]:
    if not tokens:
        return list(REGISTRY.values())
    chosen: list[Scenario] = []
    for token in tokens:
        if token in failed:
            parser.error(f"scenario group {token!r} could not be imported: {failed[token]}")
        matches = [sc for sc in REGISTRY.values() if token in (sc.name, sc.group)]
        if not matches:
            parser.error(f"no scenario or group named {token!r}; see --list")
        chosen += [sc for sc in matches if sc not in chosen]
    return chosen


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("autogen_core", "autogen_ext", "grpc"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _say(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_logging()
    failed = load_groups()
    if args.list:
        for sc in REGISTRY.values():
            systems = ", ".join(f"{s.name}{' (ours)' if s.ours else ''}" for s in sc.systems)
            _say(f"{sc.name:28} {sc.title} [{systems}]")
        for group, why in failed.items():
            _say(f"{group + '.*':28} unavailable: {why}")
        return 0
    if args.repeat < MIN_REPEAT:
        parser.error(f"--repeat must be at least {MIN_REPEAT}, got {args.repeat}")
    scenarios = _select(args.scenarios, failed, parser)
    mode: Mode = "quick" if args.quick else "full"
    want_plots = args.plots if args.plots is not None else mode == "full"
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    run = Run.begin(mode, args.repeat, ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])])
    _say(f"benchmarks: {len(scenarios)} scenarios, {mode} mode, {args.repeat} repetitions, results in {out}")
    stamped = out / f"{run.run_id}-{mode}.json"
    latest_json = out / f"latest-{mode}.json"
    latest_md = out / f"latest-{mode}.md"
    previous = read_json(latest_json)
    results: list[ScenarioResult] = []

    def save() -> tuple[dict[str, Any], dict[str, Any]]:
        # Written after every scenario, so a long run that is stopped keeps what it measured.
        report = report_json(run, results)
        merged = merge_reports(previous, report)
        write_text(stamped, dumps_json(report))
        write_text(latest_json, dumps_json(merged))
        write_text(latest_md, markdown(merged))
        return report, merged

    for sc in scenarios:
        if mode == "quick" and not sc.in_quick:
            _say(f"{sc.name} | skipped in quick mode (run it with --full)")
            continue
        result = run_scenario(sc, mode, args.repeat, run.run_id, _say)
        results.append(result)
        if want_plots and result.error is None and sc.plot:
            path = out / f"{sc.name}-{mode}.png"
            plot(result, path)
            result.plot = path.name
            _say(f"{sc.name} | plot | {path}")
        save()

    run.end()
    report, merged = save()
    if want_plots:
        for group in sorted({r.scenario.group for r in results if r.error is None} & set(GROUP_PLOTS)):
            path = out / f"{group}-{mode}.png"
            GROUP_PLOTS[group]([s for s in merged["scenarios"] if s["group"] == group and s["error"] is None], path)
            report["group_plots"][group] = merged["group_plots"][group] = path.name
            _say(f"{group} | plot | {path}")
        write_text(stamped, dumps_json(report))
        write_text(latest_json, dumps_json(merged))
    text = markdown(merged)
    write_text(latest_md, text)
    _say("")
    _say("\n".join(line for line in text.splitlines() if line.startswith("|")))
    _say("")
    _say(f"wrote {stamped}, {latest_json}, {latest_md}")
    errors = [r for r in results if r.error is not None]
    for r in errors:
        _say(f"FAILED {r.scenario.name}: {r.error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
