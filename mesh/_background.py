"""BackgroundNode: a MeshNode on its own event-loop thread, for programs that are not async.

The one synchronous facade over the async node (STYLE rule 15), kept thin: every call is handed
to the node's loop with ``asyncio.run_coroutine_threadsafe`` and waited for with a timeout. The
awaitable form (:attr:`BackgroundNode.aio`) hands the same calls over the same way and awaits
them from whatever loop the caller runs on (a Jupyter kernel's, a GUI's).

The loop thread is a daemon thread: a non-daemon one would keep a script that forgot ``close()``
alive for ever, because the interpreter joins non-daemon threads *before* it runs ``atexit``
hooks. An ``atexit`` hook closes every open node instead (daemon threads still run at that
point), so the node leaves the mesh gracefully and its agents are closed.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar, overload

from ._agent import Agent
from ._cancellation import CancellationToken
from ._ids import AgentId, AgentType, TopicId
from ._loop_thread import DEFAULT_CALL_TIMEOUT_S, LoopThread, Request, awaiting, check_timeout
from ._node import MeshNode, PeerInfo
from ._subscriptions import Subscription

logger = logging.getLogger("mesh")

T = TypeVar("T")

# Extra wait beyond a timeout the node enforces itself (send_message, wait_for_peers), so that
# the node's own, more precise error arrives first.
_NODE_TIMEOUT_GRACE_S = 2.0


_open_nodes: set[BackgroundNode] = set()
_open_lock = threading.Lock()
_atexit_registered = False


def _track(node: BackgroundNode) -> None:
    global _atexit_registered
    with _open_lock:
        _open_nodes.add(node)
        if not _atexit_registered:
            atexit.register(_close_all_at_exit)
            _atexit_registered = True


def _untrack(node: BackgroundNode) -> None:
    with _open_lock:
        _open_nodes.discard(node)


def _close_all_at_exit() -> None:
    with _open_lock:
        nodes = list(_open_nodes)
    for node in nodes:
        try:
            node.close()
        except Exception:
            logger.exception("closing %s at interpreter exit failed", node)


class BackgroundNode:
    """A :class:`MeshNode` running on its own event-loop thread, with a thread-safe blocking API,
    for programs that are not async: scripts, Flask or Django apps, GUIs, notebooks.

    Example::

        with BackgroundNode(discovery="none", seeds=["tcp://10.0.0.5:7400"]) as node:
            node.register(Echo, "echo", lambda: Echo("echoes"))
            print(node.send_message(Ask("hi"), AgentId("echo", "k1"), timeout=5.0))

    Every call may be made from any thread except the node's own (its handlers and agent
    factories run there, on the node's loop; a blocking call made there raises ``RuntimeError``
    instead of deadlocking). Errors arrive in the calling thread with their own type: a handler's
    exception, :class:`UnknownAgentTypeError`, :class:`AgentUnreachableError`,
    :class:`RemoteAgentError`, ``TimeoutError``. Every call is bounded by ``timeout=`` or
    ``call_timeout_s`` (pass ``math.inf`` to wait without limit).

    Code that runs on an event loop of its own (a Jupyter notebook, whose kernel runs a loop in
    the main thread) awaits the same calls through :attr:`aio`:
    ``await node.aio.send_message(...)``.

    ``close()`` (or leaving the ``with`` block) stops the node gracefully, closes its agents and
    ends the thread; nodes still open when the interpreter exits are closed by an ``atexit``
    hook. ``stop()`` only stops the node, which ``start()`` can start again.

    Args:
        call_timeout_s: default bound on every call, in seconds.
        **node_options: the keyword arguments of :class:`MeshNode` (``name``, ``mesh``,
            ``seeds``, ``discovery``, ``config``, ...).
    """

    def __init__(self, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S, **node_options: Any) -> None:
        check_timeout(call_timeout_s)
        self._call_timeout_s = call_timeout_s
        self._node = MeshNode(**node_options)
        self._thread = LoopThread(f"mesh-node-{self._node.name}", f"BackgroundNode {self._node.name}")
        self._aio = AsyncCalls(self)

    # -- what the node is -------------------------------------------------------------------------

    @property
    def node(self) -> MeshNode:
        """The async node itself. Use it only on its own loop: in handlers, or through :meth:`call`."""
        return self._node

    @property
    def aio(self) -> AsyncCalls:
        """The same calls as awaitables, for code running on another event loop (Jupyter)."""
        return self._aio

    @property
    def node_id(self) -> str:
        return self._node.node_id

    @property
    def name(self) -> str:
        return self._node.name

    @property
    def address(self) -> str | None:
        """The advertised endpoint (``tcp://host:port``), known after start."""
        return self._node.address

    @property
    def running(self) -> bool:
        return self._node.running

    @property
    def peers(self) -> list[PeerInfo]:
        """A snapshot of the live peers, taken on the node's loop."""
        if self._thread.in_loop_thread() or not self._thread.running:
            return self._node.peers
        return self._thread.call(self._request(self._peers, (), {}, None, "reading peers"))

    def statistics(self) -> dict[str, Any]:
        """The node's counters, read on its loop."""
        if self._thread.in_loop_thread() or not self._thread.running:
            return self._node.statistics()
        return self._thread.call(self._request(self._statistics, (), {}, None, "reading statistics"))

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self, *, timeout: float | None = None) -> BackgroundNode:
        """Start the loop thread if needed and the node on it; returns once the node has joined
        its seeds (bounded by ``config.join_timeout_s``). A start failure (an address in use...)
        is raised here. Returns this object."""
        self._thread.call(self._start(timeout))
        return self

    def stop(self, *, timeout: float | None = None) -> None:
        """Stop the node gracefully (see :meth:`MeshNode.stop`); the thread stays for a later
        :meth:`start`. Raises a publish handler's error kept with ``ignore_unhandled_exceptions=False``."""
        if self._thread.running:
            self._thread.call(self._request(self._node.stop, (), {}, timeout, "stop()"))

    def close(self, *, timeout: float | None = None) -> None:
        """Stop the node, close its agents and end the loop thread. Idempotent; final."""
        if self._thread.in_loop_thread():
            raise RuntimeError("close() was called on the node's own event-loop thread; call it from another thread")
        try:
            if self._thread.running:
                self._thread.call(self._request(self._node.close, (), {}, timeout, "close()"))
        finally:
            self._thread.close(self._bound(timeout))
            _untrack(self)

    def __enter__(self) -> BackgroundNode:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def wait_for_peers(self, n: int, *, timeout: float | None = None) -> None:
        """Return once ``n`` peers are joined and synced; ``TimeoutError`` otherwise."""
        self._thread.call(self._wait_for_peers(n, timeout))

    def stop_when_idle(self, *, timeout: float | None = None) -> None:
        """Stop once nothing is queued or running on this node (see :meth:`MeshNode.stop_when_idle`)."""
        self._thread.call(self._request(self._node.stop_when_idle, (), {}, timeout, "stop_when_idle()"))

    # -- registration -----------------------------------------------------------------------------

    def register(
        self,
        agent_class: Any,
        type: str,
        factory: Callable[[], Any],
        *,
        skip_class_subscriptions: bool = False,
        skip_direct_message_subscription: bool = False,
        timeout: float | None = None,
    ) -> AgentType:
        """``agent_class.register(node, type, factory, ...)`` on the node's loop: the factory is
        called there, lazily, once per AgentId."""
        return self._thread.call(
            self._register(
                agent_class, type, factory, skip_class_subscriptions, skip_direct_message_subscription, timeout
            )
        )

    def register_instance(
        self,
        agent: Agent,
        agent_id: AgentId,
        *,
        skip_class_subscriptions: bool = True,
        skip_direct_message_subscription: bool = False,
        timeout: float | None = None,
    ) -> AgentId:
        """``agent.register_instance(node, agent_id, ...)`` on the node's loop."""
        return self._thread.call(
            self._register_instance(
                agent, agent_id, skip_class_subscriptions, skip_direct_message_subscription, timeout
            )
        )

    def add_subscription(self, subscription: Subscription, *, timeout: float | None = None) -> None:
        self._thread.call(
            self._request(self._node.add_subscription, (subscription,), {}, timeout, "add_subscription()")
        )

    def remove_subscription(self, id: str, *, timeout: float | None = None) -> None:
        self._thread.call(self._request(self._node.remove_subscription, (id,), {}, timeout, "remove_subscription()"))

    # -- messaging --------------------------------------------------------------------------------

    def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Publish ``message``; returns once it is queued here or handed to the peers' channels."""
        self._thread.call(self._publish(message, topic_id, sender, cancellation_token, message_id, timeout))

    def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send ``message`` to ``recipient`` and wait for the reply, at most ``timeout`` seconds
        (``call_timeout_s`` by default); when the time is up the handler's cancellation token is
        cancelled (a handler that ignores its token runs on).

        ``cancellation_token`` may be cancelled from any thread; the call then raises
        ``concurrent.futures.CancelledError``.
        """
        return self._thread.call(self._send(message, recipient, sender, cancellation_token, message_id, timeout))

    @overload
    def call(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T: ...

    @overload
    def call(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T: ...

    def call(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the node's loop (awaiting it if it returns an awaitable)
        and return its result: for any other :class:`MeshNode` method, e.g.
        ``node.call(node.node.agent_save_state, agent_id)``. (A ``timeout`` argument of ``fn``
        itself goes through ``functools.partial``.)"""
        return self._thread.call(self._call_request(fn, args, kwargs, timeout))

    # -- requests, shared by the blocking and the awaitable form ----------------------------------

    def _bound(self, timeout: float | None) -> float | None:
        return check_timeout(self._call_timeout_s if timeout is None else timeout)

    def _request(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
        what: str,
        grace: float = 0.0,
    ) -> Request[T]:
        bound = self._bound(timeout)
        if not self._thread.closed:
            _track(self)  # the first request starts the loop thread: close it at exit
        return Request(fn, args, kwargs, None if bound is None else bound + grace, f"{what} on node {self.name}")

    def _call_request(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Request[Any]:
        return self._request(awaiting(fn), args, kwargs, timeout, f"{getattr(fn, '__name__', fn)}()")

    async def _peers(self) -> list[PeerInfo]:
        return self._node.peers

    async def _statistics(self) -> dict[str, Any]:
        return self._node.statistics()

    def _start(self, timeout: float | None) -> Request[None]:
        return self._request(self._start_node, (), {}, timeout, "start()")

    async def _start_node(self) -> None:
        await self._node.start()

    def _wait_for_peers(self, n: int, timeout: float | None) -> Request[None]:
        bound = self._bound(timeout)
        kwargs = {"timeout": math.inf if bound is None else bound}
        return self._request(
            self._node.wait_for_peers, (n,), kwargs, timeout, "wait_for_peers()", _NODE_TIMEOUT_GRACE_S
        )

    def _register(
        self,
        agent_class: Any,
        type: str,
        factory: Callable[[], Any],
        skip_class: bool,
        skip_direct: bool,
        timeout: float | None,
    ) -> Request[AgentType]:
        kwargs = {"skip_class_subscriptions": skip_class, "skip_direct_message_subscription": skip_direct}
        return self._request(agent_class.register, (self._node, type, factory), kwargs, timeout, f"register({type!r})")

    def _register_instance(
        self, agent: Agent, agent_id: AgentId, skip_class: bool, skip_direct: bool, timeout: float | None
    ) -> Request[AgentId]:
        kwargs = {"skip_class_subscriptions": skip_class, "skip_direct_message_subscription": skip_direct}
        register = getattr(agent, "register_instance", None)
        if register is None:
            raise TypeError(f"{agent!r} has no register_instance(); use call(node.node.register_agent_instance, ...)")
        return self._request(register, (self._node, agent_id), kwargs, timeout, f"register_instance({agent_id})")

    def _publish(
        self,
        message: Any,
        topic_id: TopicId,
        sender: AgentId | None,
        token: CancellationToken | None,
        message_id: str | None,
        timeout: float | None,
    ) -> Request[None]:
        kwargs = {"sender": sender, "cancellation_token": self._loop_token(token), "message_id": message_id}
        return self._request(self._node.publish_message, (message, topic_id), kwargs, timeout, "publish_message()")

    def _send(
        self,
        message: Any,
        recipient: AgentId,
        sender: AgentId | None,
        token: CancellationToken | None,
        message_id: str | None,
        timeout: float | None,
    ) -> Request[Any]:
        bound = self._bound(timeout)
        kwargs = {
            "sender": sender,
            "cancellation_token": self._loop_token(token),
            "message_id": message_id,
            # The node enforces the bound itself, so the handler is cancelled wherever it runs.
            "timeout": bound,
        }
        what = f"send_message() to {recipient}"
        return self._request(
            self._node.send_message, (message, recipient), kwargs, timeout, what, _NODE_TIMEOUT_GRACE_S
        )

    def _loop_token(self, token: CancellationToken | None) -> CancellationToken | None:
        """A token owned by the node's loop that follows ``token``: a CancellationToken runs its
        callbacks in the thread that cancels it, and the node's callbacks must run on its loop."""
        if token is None:
            return None
        inner = CancellationToken()
        thread = self._thread

        token.add_callback(lambda: thread.schedule(inner.cancel))
        return inner

    def __repr__(self) -> str:
        state = "closed" if self._thread.closed else "running" if self.running else "stopped"
        return f"<BackgroundNode {self.name} {state}>"


class AsyncCalls:
    """The calls of a :class:`BackgroundNode` as awaitables (``node.aio``): for code on an event
    loop of its own, such as a Jupyter notebook's. The node's work still runs on its own thread;
    the caller's loop stays free while it waits. Same arguments, results and errors as the
    blocking calls; cancelling the awaiting task cancels the call on the node."""

    def __init__(self, node: BackgroundNode) -> None:
        self._node = node
        self._thread = node._thread

    async def start(self, *, timeout: float | None = None) -> BackgroundNode:
        await self._thread.call_async(self._node._start(timeout))
        return self._node

    async def stop(self, *, timeout: float | None = None) -> None:
        if self._thread.running:
            await self._thread.call_async(self._node._request(self._node.node.stop, (), {}, timeout, "stop()"))

    async def close(self, *, timeout: float | None = None) -> None:
        """Close the node; the wait for the thread to end happens off the caller's loop."""
        if self._thread.in_loop_thread():
            raise RuntimeError("close() was called on the node's own event loop; call it from another loop or thread")
        try:
            if self._thread.running:
                await self._thread.call_async(self._node._request(self._node.node.close, (), {}, timeout, "close()"))
        finally:
            await self._thread.close_async(self._node._bound(timeout))
            _untrack(self._node)

    async def __aenter__(self) -> BackgroundNode:
        try:
            return await self.start()
        except BaseException:
            await self.close()
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_for_peers(self, n: int, *, timeout: float | None = None) -> None:
        await self._thread.call_async(self._node._wait_for_peers(n, timeout))

    async def stop_when_idle(self, *, timeout: float | None = None) -> None:
        request = self._node._request(self._node.node.stop_when_idle, (), {}, timeout, "stop_when_idle()")
        await self._thread.call_async(request)

    async def register(
        self,
        agent_class: Any,
        type: str,
        factory: Callable[[], Any],
        *,
        skip_class_subscriptions: bool = False,
        skip_direct_message_subscription: bool = False,
        timeout: float | None = None,
    ) -> AgentType:
        return await self._thread.call_async(
            self._node._register(
                agent_class, type, factory, skip_class_subscriptions, skip_direct_message_subscription, timeout
            )
        )

    async def register_instance(
        self,
        agent: Agent,
        agent_id: AgentId,
        *,
        skip_class_subscriptions: bool = True,
        skip_direct_message_subscription: bool = False,
        timeout: float | None = None,
    ) -> AgentId:
        return await self._thread.call_async(
            self._node._register_instance(
                agent, agent_id, skip_class_subscriptions, skip_direct_message_subscription, timeout
            )
        )

    async def add_subscription(self, subscription: Subscription, *, timeout: float | None = None) -> None:
        node = self._node
        await self._thread.call_async(
            node._request(node.node.add_subscription, (subscription,), {}, timeout, "add_subscription()")
        )

    async def remove_subscription(self, id: str, *, timeout: float | None = None) -> None:
        node = self._node
        await self._thread.call_async(
            node._request(node.node.remove_subscription, (id,), {}, timeout, "remove_subscription()")
        )

    async def publish_message(
        self,
        message: Any,
        topic_id: TopicId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        await self._thread.call_async(
            self._node._publish(message, topic_id, sender, cancellation_token, message_id, timeout)
        )

    async def send_message(
        self,
        message: Any,
        recipient: AgentId,
        *,
        sender: AgentId | None = None,
        cancellation_token: CancellationToken | None = None,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        return await self._thread.call_async(
            self._node._send(message, recipient, sender, cancellation_token, message_id, timeout)
        )

    @overload
    async def call(
        self, fn: Callable[..., Awaitable[T]], /, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> T: ...

    @overload
    async def call(self, fn: Callable[..., T], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> T: ...

    async def call(self, fn: Callable[..., Any], /, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return await self._thread.call_async(self._node._call_request(fn, args, kwargs, timeout))
