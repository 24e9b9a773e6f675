"""examples/bridge_hello.py runs and prints both replies."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

pytestmark = pytest.mark.interop

EXAMPLE = Path(__file__).parents[2] / "examples" / "bridge_hello.py"
# Interpreter start, imports (grpc, autogen), three runtimes up and down, on a loaded 2-core machine.
RUN_TIMEOUT_S = 60.0


async def test_bridge_hello_runs() -> None:
    with anyio.fail_after(RUN_TIMEOUT_S):
        result = await anyio.run_process([sys.executable, "-W", "error", str(EXAMPLE)], check=False)
    stdout = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert stdout.splitlines() == [
        "AutoGen greets back: 'hello from the mesh'",
        "the mesh greets back: 'hello from AutoGen'",
    ]
