"""``python -m mesh peers``: the ``agentmesh`` command without installing its script."""

from __future__ import annotations

from mesh.cli import main

if __name__ == "__main__":
    main(prog_name="python -m mesh")
