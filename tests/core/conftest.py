"""Runtime environments for the single-node semantic suite (DESIGN §2, "Semantics that must match").

Every test that takes the ``env`` fixture runs once per variant:

``star``
    autogen_core's ``SingleThreadedAgentRuntime`` with autogen_core's agents: the reference.
``mesh1``
    one ``mesh.MeshNode(discovery="none")`` with mesh's own agent classes.
``mesh1-ag``
    one ``MeshNode`` running unmodified autogen_core agent classes, ids and topics (DESIGN §2:
    they are normalised at the boundary).

A test never names a runtime class. It builds agents, ids, topics and tokens from ``env.api`` (the
module that plays the role of ``autogen_core``), registers each agent type on ``env.host(type)``,
publishes and sends from ``env.caller()``, calls ``await env.start()``, and waits on events with
``env.wait(...)`` / ``Recorder.wait_for(...)``. ``await env.stop_when_idle()`` is the barrier "all
work of every runtime is done" (it stops the runtimes and re-raises unhandled handler exceptions);
``await env.idle()`` is the same barrier followed by a restart. Constructor options
(``intervention_handlers``, ``ignore_unhandled_exceptions``) go through ``env.configure(...)`` before
the first ``host()``/``caller()``. Where a variant differs by design, the test asserts both
expectations explicitly, choosing by ``env.is_mesh`` (never by catching and ignoring).

Adding a variant, e.g. ``mesh3`` (three nodes, agents spread round robin, calls from another node):

1. subclass :class:`MeshEnv` with ``node_count = 3`` and override ``_new_runtimes`` to build three
   MeshNodes that find each other: pick three free loopback ports up front and give every node
   ``port=`` its own and ``seeds=`` the others' endpoints;
2. ``host(agent_type)`` assigns agent types round robin over ``_host_candidates()`` and remembers
   the choice; override ``_host_candidates()`` to return ``self.runtimes[1:]`` so that
   ``caller()`` (``self.runtimes[0]``) never hosts an agent and every call crosses the wire;
3. override ``start()`` to also ``await node.wait_for_peers(2, timeout=...)`` on every node, and
   ``stop_when_idle()`` to run a mesh-wide quiescence barrier before stopping the nodes;
4. add the name to ``VARIANTS`` and to ``_make_env``. The test bodies stay as they are: checks
   that only hold on one runtime ask ``env.caller() is env.host(type)``, and methods that act on
   "this node" (DESIGN §2 table: try_get_underlying_agent_instance, save_state/load_state) are
   already called on ``env.host(type)``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import types
from collections.abc import AsyncIterator, Generator
from typing import Any

import anyio
import autogen_core
import autogen_core.exceptions
import pytest

import mesh
from mesh.testing import FAST_CONFIG, quiesce

VARIANTS = ("star", "mesh1", "mesh1-ag", "mesh3", "mesh3-ag")

# Generous bound for anything a test waits for: it fails a hung test quickly, and a loaded 2-core
# machine still finishes real work well inside it.
WAIT_S = 5.0
# Bound on closing a runtime in teardown (a hung close must not hang the whole run).
CLOSE_TIMEOUT_S = 10.0
# Bound on a whole test body: a runtime that loses a reply fails the test instead of hanging it
# (tests await send_message() directly; each test normally takes milliseconds).
TEST_TIMEOUT_S = 15.0


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Run every async test of this directory under ``anyio.fail_after(TEST_TIMEOUT_S)``."""
    original = pyfuncitem.obj
    if not inspect.iscoroutinefunction(original):
        return (yield)

    @functools.wraps(original)
    async def bounded(*args: Any, **kwargs: Any) -> Any:
        with anyio.fail_after(TEST_TIMEOUT_S):
            return await original(*args, **kwargs)

    pyfuncitem.obj = bounded
    try:
        return (yield)
    finally:
        pyfuncitem.obj = original


class Recorder:
    """Collects what handlers saw; tests wait for a number of items instead of sleeping."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()

    async def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Any]:
        """Wait until at least ``count`` items arrived; returns all items."""
        with anyio.fail_after(timeout_s):
            while len(self.items) < count:  # bounded by fail_after
                self._changed.clear()
                await self._changed.wait()
        return self.items


class Env:
    """One runtime set-up for a test; see the module docstring."""

    name: str
    api: types.ModuleType
    is_mesh: bool
    node_count = 1
    wait_s = WAIT_S

    def __init__(self) -> None:
        self._options: dict[str, Any] = {}
        self._runtimes: list[Any] | None = None
        self._running: list[bool] = []
        self._hosts: dict[str, Any] = {}

    # -- what tests use -------------------------------------------------------------------------

    @property
    def agent_errors(self) -> types.ModuleType:
        """Where the exceptions raised by ``env.api``'s agent classes live (CantHandleException...)."""
        return mesh if self.api is mesh else autogen_core.exceptions

    @property
    def runtime_errors(self) -> types.ModuleType:
        """Where the exceptions raised by the runtime itself live (MessageDroppedException...)."""
        return mesh if self.is_mesh else autogen_core.exceptions

    def configure(self, **options: Any) -> None:
        """Constructor options for the runtimes; only before they are created."""
        if self._runtimes is not None:
            raise RuntimeError("env.configure() must be called before env.host()/env.caller()")
        self._options.update(options)

    @property
    def runtimes(self) -> list[Any]:
        if self._runtimes is None:
            self._runtimes = self._new_runtimes(dict(self._options))
            self._running = [False] * len(self._runtimes)
        return self._runtimes

    def host(self, agent_type: str) -> Any:
        """The runtime on which to register ``agent_type`` (round robin over the runtimes, stable)."""
        runtime = self._hosts.get(agent_type)
        if runtime is None:
            candidates = self._host_candidates()
            runtime = candidates[len(self._hosts) % len(candidates)]
            self._hosts[agent_type] = runtime
        return runtime

    def caller(self) -> Any:
        """The runtime to publish and send from."""
        return self.runtimes[0]

    def crosses(self, agent_type: str) -> bool:
        """Whether calls from ``caller()`` to ``agent_type`` cross from one node to another."""
        return self.caller() is not self.host(agent_type)

    def raises(self, exc_type: type[BaseException], agent_type: str, match: str | None = None) -> Any:
        """``pytest.raises`` for an exception a handler of ``agent_type`` raises, as the caller sees it.

        DESIGN §2 "Errors cross the wire": locally the caller gets the very exception; across nodes
        a type that is not builtin, the mesh's own, autogen_core's or registered with the caller's
        node (``register_exception_type``) arrives as ``RemoteAgentError`` naming the type.
        """
        if self.crosses(agent_type) and exc_type.__module__ not in ("builtins", "mesh._errors"):
            pattern = f"{exc_type.__qualname__}: {match.lstrip('^')}" if match else exc_type.__qualname__
            return pytest.raises(mesh.RemoteAgentError, match=pattern)
        return pytest.raises(exc_type, match=match)

    def recorder(self) -> Recorder:
        return Recorder()

    async def wait(self, event: asyncio.Event, timeout_s: float = WAIT_S) -> None:
        with anyio.fail_after(timeout_s):
            await event.wait()

    async def finished(self, task: asyncio.Future[Any], timeout_s: float = WAIT_S) -> asyncio.Future[Any]:
        """Wait (bounded) until ``task`` ends, however it ends, without raising its outcome."""
        with anyio.fail_after(timeout_s):
            await asyncio.wait({task})
        return task

    async def start(self) -> None:
        for i, runtime in enumerate(self.runtimes):
            if not self._running[i]:
                await self._start_runtime(runtime)
                self._running[i] = True

    async def stop_when_idle(self, timeout_s: float = WAIT_S) -> None:
        """Wait until every runtime has nothing queued or running, and stop them all.

        Re-raises an unhandled publish-handler exception (``ignore_unhandled_exceptions=False``).
        """
        errors: list[BaseException] = []
        with anyio.fail_after(timeout_s):
            for i, runtime in enumerate(self.runtimes):
                if not self._running[i]:
                    continue
                self._running[i] = False
                try:
                    await runtime.stop_when_idle()
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]

    async def idle(self) -> None:
        """Barrier: everything queued so far has been handled; the runtimes run again afterwards."""
        await self.stop_when_idle()
        await self.start()

    async def aclose(self) -> None:
        """Stop and close every runtime, whatever state the test left it in; raise the first error."""
        errors: list[BaseException] = []
        for i, runtime in enumerate(self._runtimes or ()):
            self._running[i] = False
            try:
                with anyio.fail_after(CLOSE_TIMEOUT_S):
                    await runtime.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- what variants implement ----------------------------------------------------------------

    def _host_candidates(self) -> list[Any]:
        """The runtimes that may host agent types (all of them by default)."""
        return self.runtimes

    def _new_runtimes(self, options: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    async def _start_runtime(self, runtime: Any) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Env {self.name}>"


class StarEnv(Env):
    """autogen_core's SingleThreadedAgentRuntime (its ``start()`` is synchronous; its ``stop()``
    raises when not started, which is why teardown uses ``close()``, a no-op stop then)."""

    name = "star"
    api = autogen_core
    is_mesh = False

    def _new_runtimes(self, options: dict[str, Any]) -> list[Any]:
        return [autogen_core.SingleThreadedAgentRuntime(**options)]

    async def _start_runtime(self, runtime: Any) -> None:
        runtime.start()


class MeshEnv(Env):
    """MeshNodes without discovery; ``api`` is ``mesh`` or ``autogen_core`` (mesh.autogen boundary)."""

    is_mesh = True

    def __init__(self, name: str, api: types.ModuleType) -> None:
        super().__init__()
        self.name = name
        self.api = api

    def _new_runtimes(self, options: dict[str, Any]) -> list[Any]:
        return [mesh.MeshNode(discovery="none", **options) for _ in range(self.node_count)]

    async def _start_runtime(self, runtime: Any) -> None:
        await runtime.start()


class Mesh3Env(MeshEnv):
    """Three MeshNodes joined through the first; node 0 calls and hosts nothing, agent types are
    spread round robin over nodes 1 and 2, so every publish and call crosses the wire."""

    node_count = 3

    def _new_runtimes(self, options: dict[str, Any]) -> list[Any]:
        return [
            mesh.MeshNode(discovery="none", name=f"n{i}", mesh=self._mesh, config=FAST_CONFIG, **options)
            for i in range(self.node_count)
        ]

    def __init__(self, name: str, api: types.ModuleType) -> None:
        super().__init__(name, api)
        self._mesh = f"core-{id(self):x}"

    def _host_candidates(self) -> list[Any]:
        return self.runtimes[1:]

    async def start(self) -> None:
        first = self.runtimes[0]
        for i, runtime in enumerate(self.runtimes):
            if not self._running[i]:
                if i > 0:
                    runtime._seeds = (first.address,) if first.running else ()
                await runtime.start()
                self._running[i] = True
        for runtime in self.runtimes:
            await runtime.wait_for_peers(self.node_count - 1, timeout=WAIT_S)

    async def stop_when_idle(self, timeout_s: float = WAIT_S) -> None:
        running = [r for i, r in enumerate(self.runtimes) if self._running[i]]
        if running:
            await quiesce(running, timeout_s)
        await super().stop_when_idle(timeout_s)


def _make_env(name: str) -> Env:
    if name == "star":
        return StarEnv()
    if name == "mesh1":
        return MeshEnv(name, mesh)
    if name == "mesh1-ag":
        return MeshEnv(name, autogen_core)
    if name == "mesh3":
        return Mesh3Env(name, mesh)
    if name == "mesh3-ag":
        return Mesh3Env(name, autogen_core)
    raise ValueError(f"unknown env variant {name!r}")


@pytest.fixture(params=VARIANTS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    environment = _make_env(request.param)
    try:
        yield environment
    finally:
        await environment.aclose()
