"""mesh.testing imports without pytest or hypothesis, and the agentmesh pytest plugin, loaded from
its entry point, never breaks a run in which hypothesis is missing; its fixture starts meshes and
closes them after the test."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mesh.testing
from mesh.testing import _plugin

# A fresh interpreter importing the mesh and running pytest: generous for a loaded 2-core machine.
RUN_TIMEOUT_S = 90.0

# Makes the named top-level packages impossible to import, as if they were not installed.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class Block(importlib.abc.MetaPathFinder):
        def __init__(self, names):
            self.names = names

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block(set(sys.argv[1].split(","))))
    del sys.argv[1]
    """
)


def run_python(code: str, blocked: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", BLOCKER + textwrap.dedent(code), blocked, *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env=env,
        check=False,
    )


def test_mesh_testing_imports_without_pytest_or_hypothesis() -> None:
    result = run_python(
        """
        import sys
        import mesh.testing
        from mesh.testing import FAST_CONFIG, LocalMesh, ReferenceModel, ThreadedMesh, quiesce, wait_for

        with ThreadedMesh(2) as mesh:
            mesh.quiesce()
        assert "pytest" not in sys.modules and "hypothesis" not in sys.modules, sorted(sys.modules)
        try:
            import mesh.testing.strategies
        except ModuleNotFoundError as exc:
            print("strategies need", exc.name)
        """,
        "pytest,hypothesis,_pytest,_hypothesis_pytestplugin",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "strategies need hypothesis\n"


def test_importing_mesh_testing_is_light() -> None:
    """The plugin loads in every pytest run of every user: it must not start the node stack."""
    result = run_python(
        """
        import sys
        import mesh.testing._plugin
        heavy = sorted(m for m in ("zmq", "hypothesis", "mesh._node", "discovery", "anyio") if m in sys.modules)
        print(heavy)
        """,
        "hypothesis",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"


def test_the_plugin_is_registered_as_a_pytest_entry_point() -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11", name="agentmesh")
    assert [ep.value for ep in entry_points] == ["mesh.testing._plugin"]
    assert [ep.load() for ep in entry_points] == [_plugin]


USER_TESTS = """
import sys

import pytest

from mesh import AgentId, MessageContext, RoutedAgent, rpc

MESHES = []


class Echo(RoutedAgent):
    @rpc
    async def echo(self, message: str, ctx: MessageContext) -> str:
        return f"{message}@{self.runtime.node_id}"


@pytest.mark.anyio
async def test_the_fixture_starts_joined_meshes(agentmesh_mesh) -> None:
    assert "hypothesis" not in sys.modules
    small, large = await agentmesh_mesh(1), await agentmesh_mesh(3)
    MESHES.extend([small, large])
    assert [len(n.peers) for n in small.nodes + large.nodes] == [0, 2, 2, 2]
    assert small.nodes[0].mesh != large.nodes[0].mesh
    await Echo.register(large.nodes[2], "echo", lambda: Echo("echoes"))
    assert await large.nodes[0].send_message("hi", AgentId("echo", "k")) == "hi@node2"


def test_every_mesh_was_closed_after_the_test() -> None:
    assert [n.running for m in MESHES for n in m.nodes] == [False] * 4


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""

RUN_PYTEST = """
import sys
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_the_plugin_loads_and_its_fixture_works_without_hypothesis(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    # A user's project: its own rootdir and no configuration of ours. hypothesis' own plugin is
    # not there either when hypothesis is not installed.
    result = run_python(
        RUN_PYTEST,
        "hypothesis,_hypothesis_pytestplugin",
        "-p",
        "no:hypothesispytest",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "--rootdir",
        str(tmp_path),
        "-v",
        str(tmp_path / "test_user.py"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    assert "agentmesh" in result.stdout  # pytest lists the plugin in its header


def test_the_fixture_refuses_another_backend_clearly() -> None:
    fixture = _plugin.agentmesh_mesh.__wrapped__
    gen = fixture(("trio", {}))
    with pytest.raises(RuntimeError, match="agentmesh nodes run on asyncio; this test runs on 'trio'"):
        gen.asend(None).send(None)


def test_mesh_testing_lists_what_it_exports() -> None:
    assert sorted(dir(mesh.testing)) == sorted(mesh.testing.__all__)
    for name in mesh.testing.__all__:
        assert getattr(mesh.testing, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mesh.testing.nope  # noqa: B018
