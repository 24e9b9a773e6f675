"""The one-process examples run as a user runs them (``python examples/NAME.py``) and print what
they promise: hello's greetings, the key-value store's replies and errors rebuilt across the wire,
and scale-out's keys spread over three nodes and moved, with their counts, when one leaves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mesh._placement import owner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# An interpreter start, imports and a few nodes on loopback: generous for a loaded 2-core machine.
RUN_TIMEOUT_S = 60.0
# "Each under ~100 lines" (DESIGN §1); the pipeline has four stages and their command line.
MAX_LINES = {"hello.py": 100, "kv_store.py": 100, "scale_out.py": 100, "pipeline.py": 125}


def run_example(name: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_hello_greets_five_times_each_way() -> None:
    lines = run_example("hello.py")
    assert sorted(lines) == sorted(f"worker{w}: Hello x {i}" for w in (1, 2) for i in range(1, 6))


def test_the_key_value_store_rebuilds_errors_across_the_wire() -> None:
    assert run_example("kv_store.py") == [
        "apples = 6.0",
        "apples / pi = 1.91",
        "Get(key='plums') raised KeyError: 'plums'",
        "Ratio(numerator='apples', denominator='pears') raised ZeroDivisionError: float division by zero",
        "Put(key='pi', value=3.0) raised ReadOnlyError: pi is read-only",
        "Put(key='plums', value=1.0) raised RemoteAgentError (__main__.StoreFullError): no room for plums: the "
        "store holds 3 keys",
    ]


def test_scale_out_spreads_keys_by_placement_and_moves_them_with_their_state() -> None:
    lines = run_example("scale_out.py")
    assert lines[0] == "three nodes host the type counter:"
    assert lines[7] == "node-b stopped; its keys moved to node-a and node-c with their counts:"
    served = re.compile(r"^  (\w+) +on (node-[abc]): count (\d)$")
    before = [served.match(line).groups() for line in lines[1:7]]  # type: ignore[union-attr]
    after = [served.match(line).groups() for line in lines[8:14]]  # type: ignore[union-attr]
    three, two = ["node-a", "node-b", "node-c"], ["node-a", "node-c"]
    assert before == [(key, owner(three, "counter", key), "1") for key, _, _ in before]
    assert after == [(key, owner(two, "counter", key), "2") for key, _, _ in before]
    assert {node for _, node, _ in before} == set(three)  # every node served some keys
    assert any(node == "node-b" for _, node, _ in before)  # so some moved, and kept counting
    assert len(lines) == 14


@pytest.mark.parametrize(("name", "limit"), MAX_LINES.items())
def test_examples_are_short(name: str, limit: int) -> None:
    assert len((EXAMPLES / name).read_text().splitlines()) <= limit


def test_every_example_is_run_by_a_test() -> None:
    tests = "\n".join(p.read_text() for p in Path(__file__).resolve().parents[1].rglob("test_*.py"))
    for example in EXAMPLES.glob("*.py"):
        ran = re.search(rf'run_example\("{re.escape(example.name)}"\)|/ "{re.escape(example.name)}"', tests)
        assert ran is not None, f"no test runs examples/{example.name}"
