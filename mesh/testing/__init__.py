"""Tools for testing agent systems on a mesh: in-process meshes, strategies, a reference model.

Importable without pytest; hypothesis is imported only by the parts that need it.
"""

from __future__ import annotations

__all__: list[str] = []
