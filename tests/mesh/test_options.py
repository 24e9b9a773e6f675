"""MeshNode's arguments are checked when the node is made: a bad one is a ValueError (or a
TypeError) naming what is wrong, before any socket opens."""

from __future__ import annotations

import pytest

from mesh import MeshNode


@pytest.mark.parametrize("mesh", ["", "m" * 129, "é" * 65, "tab\there", "new\nline", None, 7])
def test_a_mesh_name_that_cannot_travel_is_refused(mesh: object) -> None:
    with pytest.raises(ValueError, match="mesh name"):
        MeshNode(discovery="none", mesh=mesh)  # type: ignore[arg-type]


@pytest.mark.parametrize("mesh", ["m", "m" * 128, "é" * 64, "plant-7 floor 2", "日本"])
def test_mesh_names_up_to_128_utf8_bytes_are_fine(mesh: str) -> None:
    assert MeshNode(discovery="none", mesh=mesh).mesh == mesh


def test_other_arguments_are_checked_too() -> None:
    with pytest.raises(ValueError, match="discovery"):
        MeshNode(discovery="dns")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node_id"):
        MeshNode(discovery="none", node_id="no spaces")
    with pytest.raises(TypeError, match="seeds"):
        MeshNode(discovery="none", seeds="tcp://127.0.0.1:7400")  # type: ignore[arg-type]
