"""Tools for testing agent systems on a mesh: in-process meshes, a quiescence barrier, and a
reference model of AutoGen's delivery semantics to use as an oracle.

Importable without pytest; hypothesis is imported only by :mod:`mesh.testing.strategies`.
"""

from __future__ import annotations

from ._mesh import FAST_CONFIG, FAST_MEMBERSHIP, LocalMesh, fast_config, quiesce, wait_for
from ._model import ModelSubscription, ReferenceModel

__all__ = [
    "FAST_CONFIG",
    "FAST_MEMBERSHIP",
    "LocalMesh",
    "ModelSubscription",
    "ReferenceModel",
    "fast_config",
    "quiesce",
    "wait_for",
]
