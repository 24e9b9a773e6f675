"""Summarise py-spy's collapsed stacks: ``python -m benchmarks._profile FILE [--top N] [--only TEXT]``.

The files come from ``AGENTMESH_BENCH_PROFILE=DIR python -m benchmarks ...`` (see ``_procs.py``).
Prints the functions with the most samples on top of the stack (self) and anywhere in it (total),
as shares of the samples that were not idle (a thread waiting in ``select``/``epoll`` is idle)
and not importing modules.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

STARTUP_FRAMES = ("_find_and_load", "_gcd_import")
IDLE_MARKERS = ("select (selectors.py", "epoll", "_run_once (asyncio/base_events.py", "readline", "wait (threading.py")


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]


def summarise(paths: list[Path], top: int, only: str | None) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = _frames(stack)
            if not frames or (only is not None and not any(only in f for f in frames)):
                continue
            if any(f.startswith(STARTUP_FRAMES) for f in frames):
                continue  # imports and start-up, not the steady state being measured
            if any(m in frames[-1] for m in IDLE_MARKERS) or "bench-stdin" in stack:
                idle += count
                continue
            busy += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    out = [f"{', '.join(p.name for p in paths)}: {busy} busy samples, {idle} idle"]
    for title, counter in (("self", own), ("total", total)):
        out.append(f"-- top {top} by {title} --")
        for frame, count in counter.most_common(top):
            out.append(f"{100 * count / max(busy, 1):5.1f}%  {frame}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks._profile")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--only", help="keep only stacks with a frame containing this text")
    args = p.parse_args(argv)
    print(summarise(args.files, args.top, args.only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
