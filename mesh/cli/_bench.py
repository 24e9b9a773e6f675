"""``agentmesh bench [ARGS]``: ``python -m benchmarks ARGS`` of the source checkout this package runs
from (the benchmarks and their baselines are not part of the installed package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

# The checkout the package was installed from (editable install) or runs in; a wheel has no benchmarks.
CHECKOUT = Path(__file__).resolve().parents[2]


def benchmarks_root() -> Path:
    """The directory that holds the ``benchmarks`` package.

    Raises:
        click.ClickException: this installation is not a source checkout.
    """
    if not (CHECKOUT / "benchmarks" / "__main__.py").is_file():
        raise click.ClickException(
            "agentmesh bench runs the benchmarks of a source checkout, and this installation has none: clone the "
            "repository, `pip install -e '.[bench]'` there, and run `agentmesh bench` (or `make bench`)"
        )
    return CHECKOUT


@click.command(
    "bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}, add_help_option=False
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Run the benchmarks against their baselines: python -m benchmarks [ARGS] of a source checkout
    (`agentmesh bench --help` for its options; --quick for a smoke run, --full for the real one)."""
    root = benchmarks_root()
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], env={**os.environ, "PYTHONPATH": path}, check=False
    )
    raise SystemExit(result.returncode)
