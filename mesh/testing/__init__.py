"""Tools for testing your own agent systems on a mesh: in-process meshes with fast timings, a
mesh-wide quiescence barrier, waiting by condition, a reference model of AutoGen's delivery
semantics to use as an oracle, and hypothesis strategies (:mod:`mesh.testing.strategies`).

- :class:`LocalMesh` (async context manager): N nodes in this process and loop, on loopback,
  joined, with failure detection in about a second (:data:`FAST_CONFIG`); closed on exit.
- :class:`ThreadedMesh`: the same on a thread of its own, driven by blocking calls, for
  synchronous test code such as hypothesis' stateful tests.
- :func:`quiesce` / ``mesh.quiesce()``: returns once nothing is queued, running or in flight on
  any node (counters stable over two rounds); compare deliveries with the model after it.
- :func:`wait_for`: wait for a condition, bounded, without fixed sleeps.
- :class:`ReferenceModel`: which AgentIds a publish reaches and which node a send goes to.
- the pytest fixture ``agentmesh_mesh`` (registered by the ``agentmesh`` pytest plugin):
  ``mesh = await agentmesh_mesh(3)`` in an anyio test; every mesh is closed after the test.

Importing this package imports neither pytest nor hypothesis, and the node only on first use;
:mod:`mesh.testing.strategies` needs hypothesis (the ``testing`` extra).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import ModelSubscription, ReferenceModel, class_subscriptions

if TYPE_CHECKING:
    from ._mesh import FAST_CONFIG, FAST_MEMBERSHIP, LocalMesh, fast_config, quiesce, wait_for
    from ._threaded import ThreadedMesh

__all__ = [
    "FAST_CONFIG",
    "FAST_MEMBERSHIP",
    "LocalMesh",
    "ModelSubscription",
    "ReferenceModel",
    "ThreadedMesh",
    "class_subscriptions",
    "fast_config",
    "quiesce",
    "wait_for",
]

_LAZY = {
    "FAST_CONFIG": "._mesh",
    "FAST_MEMBERSHIP": "._mesh",
    "LocalMesh": "._mesh",
    "fast_config": "._mesh",
    "quiesce": "._mesh",
    "wait_for": "._mesh",
    "ThreadedMesh": "._threaded",
}


def __getattr__(name: str) -> Any:
    # The node (and ZeroMQ with it) is imported on first use, so the pytest plugin loads light.
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'mesh.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
