"""The worked examples of mesh.testing run as a user runs them (pytest, with the agentmesh plugin
from its entry point), and the stateful one catches a routing mistake."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from mesh import AgentId

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
STATEFUL = EXAMPLES / "test_routing_stateful.py"
QUICKSTART = EXAMPLES / "test_placement_quickstart.py"
# A pytest run in a fresh interpreter: imports, 25 stateful examples of 3 nodes each, shrinking
# if something fails. Generous for a loaded 2-core machine.
RUN_TIMEOUT_S = 110.0
README_LINES = 20


def load(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_examples_pass_under_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error", str(QUICKSTART), str(STATEFUL)],
        cwd=EXAMPLES.parent,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


@pytest.mark.parametrize("path", [QUICKSTART, EXAMPLES / "embed_sync.py"], ids=lambda p: p.name)
def test_readme_examples_are_short(path: Path) -> None:
    assert len(path.read_text().splitlines()) < README_LINES


def test_the_stateful_example_catches_a_wrong_placement() -> None:
    """A model that places every key on the first node hosting its type (instead of rendezvous
    hashing) must be caught: the deliveries then run on other nodes than it predicts."""
    example = load(STATEFUL)

    class FirstHostModel(example.ReferenceModel):
        def owner(self, agent_id: AgentId) -> str | None:
            hosts = sorted(self.factories.get(agent_id.type, ()))
            return hosts[0] if hosts else None

    class WrongPlacement(example.ShopRouting):
        def __init__(self) -> None:
            super().__init__()
            self.model = FirstHostModel()

    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            WrongPlacement,
            settings=settings(
                max_examples=200,
                phases=[Phase.generate],  # the first failing example is enough: no shrinking
                stateful_step_count=20,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
                print_blob=False,
            ),
        )
