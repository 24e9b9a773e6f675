"""ThreadedMesh: a LocalMesh on its own event-loop thread, driven by blocking calls."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, overload

from .._loop_thread import DEFAULT_CALL_TIMEOUT_S, LoopThread, Request, awaiting, check_timeout
from .._node import MeshNode
from ._mesh import LocalMesh, wait_for

T = TypeVar("T")


class ThreadedMesh:
    """A :class:`LocalMesh` whose nodes run on an event loop in a thread of their own, driven by
    blocking calls: for synchronous test code, above all hypothesis' stateful tests, whose rules
    are plain functions.

    Example::

        with ThreadedMesh(3) as mesh:
            mesh.call(Shop.register, mesh.nodes[1], "shop", Shop)
            mesh.call(mesh.nodes[0].publish_message, Order(1), TopicId("orders", "a"))
            mesh.quiesce()

    Every call runs on the mesh's loop and is bounded by ``timeout`` (``call_timeout_s`` by
    default); exceptions arrive in the calling thread with their own type. Handlers run on the
    mesh's thread: collect what they record in plain lists and read them after :meth:`quiesce`.

    Args:
        n: how many nodes to start.
        call_timeout_s: default bound on every call, in seconds.
        **options: the keyword arguments of :class:`LocalMesh` (``config``, ``mesh``, node options).
    """

    def __init__(self, n: int, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, **options: Any) -> None:
        check_timeout(call_timeout_s)
        self._call_timeout_s = call_timeout_s
        self._mesh = LocalMesh(n, **options)
        self._thread = LoopThread(f"mesh-testing-{uuid.uuid4().hex[:6]}", "this ThreadedMesh")

    @property
    def local_mesh(self) -> LocalMesh:
        """The async mesh; use it only on its loop (in handlers, or through :meth:`call`)."""
        return self._mesh

    @property
    def nodes(self) -> list[MeshNode]:
        """The nodes, in the order they were started."""
        return self._mesh.nodes

    def start(self) -> ThreadedMesh:
        """Start the nodes; returns once every node sees every other. Returns this object."""
        self._run(self._mesh.__aenter__, None, "starting the mesh")
        return self

    def close(self) -> None:
        """Close every node and end the thread. Idempotent."""
        try:
            if self._thread.running:
                self._run(self._mesh.aclose, None, "closing the mesh")
        finally:
            self._thread.close(self._call_timeout_s)

    def __enter__(self) -> ThreadedMesh:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @overload
    def call(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T: ...

    @overload
    def call(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T: ...

    def call(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the mesh's loop, awaiting it if it returns an awaitable,
        and return its result, e.g. ``mesh.call(node.send_message, Ask(1), AgentId("a", "k"))``."""
        return self._run(awaiting(fn), timeout, f"{getattr(fn, '__name__', fn)}()", *args, **kwargs)

    def quiesce(self, timeout: float = 10.0) -> None:
        """The mesh-wide quiescence barrier (:func:`quiesce`) over the running nodes."""
        self._run(self._mesh.quiesce, timeout + 1.0, "quiesce()", timeout)

    def converge(self, timeout: float = 10.0) -> None:
        """Wait until every running node sees every other running node."""
        self._run(self._mesh.converge, timeout + 1.0, "converge()", timeout)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
        """Wait until ``predicate()`` (evaluated on the mesh's loop) is true; ``TimeoutError`` naming
        ``what`` otherwise."""
        self._run(wait_for, timeout + 1.0, f"waiting for {what}", predicate, timeout, what)

    def add_node(self, **overrides: Any) -> MeshNode:
        """Start one more node, joined to the others (see :meth:`LocalMesh.add_node`)."""
        return self._run(self._mesh.add_node, None, "add_node()", **overrides)

    def stop_node(self, node: MeshNode) -> None:
        """Stop one node gracefully (it leaves the mesh)."""
        self._run(node.stop, None, "stop_node()")

    def _run(self, fn: Callable[..., Awaitable[T]], timeout: float | None, what: str, *args: Any, **kwargs: Any) -> T:
        bound = check_timeout(self._call_timeout_s if timeout is None else timeout)
        return self._thread.call(Request(fn, args, kwargs, bound, what))

    def __repr__(self) -> str:
        return f"<ThreadedMesh of {len(self.nodes)} nodes>"
