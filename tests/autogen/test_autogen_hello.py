"""The seed example: AutoGen's hello, agents unchanged, on two mesh nodes (issue: drop-in)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "autogen_hello.py"


def test_each_agent_says_hello_five_times_exactly_once_and_the_program_ends() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    expected = [f"{worker}: Hello x {i}" for worker in ("worker1", "worker2") for i in range(1, 6)]
    assert Counter(lines) == Counter(expected)
    for worker in ("worker1", "worker2"):
        # Each agent counts up in order.
        assert [line for line in lines if line.startswith(worker)] == [f"{worker}: Hello x {i}" for i in range(1, 6)]
