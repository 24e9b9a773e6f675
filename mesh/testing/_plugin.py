"""The pytest plugin registered by the ``agentmesh-zmq`` distribution (entry point ``agentmesh``).

It must never break a user's pytest run: at load time it imports only pytest and the light
``mesh.testing`` package (no hypothesis, no node); the fixture imports the rest when used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._mesh import LocalMesh


@pytest.fixture
async def agentmesh_mesh(anyio_backend: Any) -> AsyncIterator[Callable[..., Awaitable[LocalMesh]]]:
    """A factory of in-process meshes: ``mesh = await agentmesh_mesh(3)`` starts three joined
    nodes on loopback with fast timings (keyword arguments go to :class:`mesh.testing.LocalMesh`);
    every mesh it made is closed after the test.

    The fixture is async: it runs under anyio's pytest plugin (installed with agentmesh), so mark
    the test ``@pytest.mark.anyio`` or set ``anyio_mode = "auto"``. Nodes run on asyncio only.
    """
    backend = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if backend != "asyncio":
        raise RuntimeError(f"agentmesh nodes run on asyncio; this test runs on {backend!r} (see anyio_backend)")
    from ._mesh import LocalMesh

    meshes: list[LocalMesh] = []

    async def make(n: int = 3, **options: Any) -> LocalMesh:
        mesh = LocalMesh(n, **options)
        await mesh.__aenter__()
        meshes.append(mesh)
        return mesh

    try:
        yield make
    finally:
        for mesh in reversed(meshes):
            await mesh.aclose()
