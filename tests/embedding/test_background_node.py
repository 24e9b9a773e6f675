"""BackgroundNode: a node on its own loop thread, driven from plain threads and from a loop in the
main thread (as in Jupyter). Waits are on events with a bound, never fixed sleeps."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import math
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mesh import (
    AgentId,
    BackgroundNode,
    CancellationToken,
    MessageContext,
    NodeStoppedError,
    RemoteAgentError,
    RoutedAgent,
    TopicId,
    TypeSubscription,
    UnknownAgentTypeError,
    event,
    rpc,
)
from mesh.testing import FAST_CONFIG

WAIT_S = 10.0

MakeNode = Callable[..., BackgroundNode]


class OrderRejected(Exception):
    """A user's own exception type: not on the mesh's allow-list unless registered."""


class Echo(RoutedAgent):
    """Replies, raises what it is asked to, or waits until its call is cancelled."""

    started = threading.Event()
    cancelled = threading.Event()

    def __init__(self) -> None:
        super().__init__("echoes")

    @rpc
    async def echo(self, message: str, ctx: MessageContext) -> str:
        if message == "value-error":
            raise ValueError("bad value")
        if message == "key-error":
            raise KeyError("no such key")
        if message == "rejected":
            raise OrderRejected("out of stock")
        if message == "hang":
            waiter = asyncio.get_running_loop().create_future()
            ctx.cancellation_token.link_future(waiter)
            Echo.started.set()
            try:
                await waiter
            except asyncio.CancelledError:
                Echo.cancelled.set()
                raise
        return f"{message.upper()} from {self.id}"


class Listener(RoutedAgent):
    def __init__(self, inbox: list[Any], arrived: threading.Event) -> None:
        super().__init__("listens")
        self._inbox = inbox
        self._arrived = arrived

    @event
    async def on_news(self, message: str, ctx: MessageContext) -> None:
        self._inbox.append((self.id, message, threading.current_thread().name))
        self._arrived.set()
        if message == "explode":
            raise ValueError("listener exploded")


@pytest.fixture(autouse=True)
def _reset_echo() -> None:
    Echo.started.clear()
    Echo.cancelled.clear()


@pytest.fixture
def make_node() -> Iterator[MakeNode]:
    """BackgroundNodes on one fresh mesh name with fast timings; all closed at teardown."""
    mesh_name = f"embed-{uuid.uuid4().hex[:8]}"
    nodes: list[BackgroundNode] = []

    def make(**options: Any) -> BackgroundNode:
        options.setdefault("discovery", "none")
        options.setdefault("mesh", mesh_name)
        options.setdefault("config", FAST_CONFIG)
        node = BackgroundNode(call_timeout_s=WAIT_S, **options)
        nodes.append(node)
        return node

    yield make
    for node in reversed(nodes):
        node.close()


def loop_threads(node: BackgroundNode) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"mesh-node-{node.name}"]


def test_a_plain_thread_registers_publishes_and_calls(make_node: MakeNode) -> None:
    inbox: list[Any] = []
    arrived = threading.Event()
    factories_ran_on: list[str] = []

    def make_listener() -> Listener:
        factories_ran_on.append(threading.current_thread().name)
        return Listener(inbox, arrived)

    with make_node(name="plain") as node:
        assert node.running
        assert node.address is not None and node.address.startswith("tcp://127.0.0.1:")
        node.register(Echo, "echo", Echo)
        node.register(Listener, "listener", make_listener)
        node.add_subscription(TypeSubscription("news", "listener"))

        assert node.send_message("hi", AgentId("echo", "k1")) == "HI from echo/k1"
        node.publish_message("hello", TopicId("news", "src"))
        assert arrived.wait(WAIT_S)
        # Handlers ran on the node's own thread, not on the caller's.
        assert inbox == [(AgentId("listener", "src"), "hello", "mesh-node-plain")]
        assert factories_ran_on == ["mesh-node-plain"]
        assert node.statistics()["delivered"] >= 2
        assert node.peers == []
    assert not node.running
    assert loop_threads(node) == []


def test_handler_errors_reach_the_calling_thread_with_their_type(make_node: MakeNode) -> None:
    with make_node() as node:
        node.register(Echo, "echo", Echo)
        with pytest.raises(ValueError, match=r"^bad value$"):
            node.send_message("value-error", AgentId("echo", "k"))
        with pytest.raises(UnknownAgentTypeError, match="'nobody' is not registered"):
            node.send_message("hi", AgentId("nobody", "k"))
        # The node still serves after errors.
        assert node.send_message("ok", AgentId("echo", "k")) == "OK from echo/k"


def test_errors_cross_nodes_into_the_calling_thread(make_node: MakeNode) -> None:
    host = make_node(name="host").start()
    caller = make_node(name="caller", seeds=[host.address]).start()
    caller.wait_for_peers(1)
    host.wait_for_peers(1)
    host.register(Echo, "echo", Echo)

    assert caller.send_message("far", AgentId("echo", "k")) == "FAR from echo/k"
    with pytest.raises(KeyError, match="no such key"):
        caller.send_message("key-error", AgentId("echo", "k"))
    with pytest.raises(RemoteAgentError, match="OrderRejected: out of stock"):
        caller.send_message("rejected", AgentId("echo", "k"))
    caller.call(caller.node.register_exception_type, OrderRejected)
    with pytest.raises(OrderRejected, match="out of stock"):
        caller.send_message("rejected", AgentId("echo", "k"))
    assert [p.name for p in caller.peers] == ["host"]


def test_a_send_timeout_raises_and_cancels_the_handler(make_node: MakeNode) -> None:
    with make_node() as node:
        node.register(Echo, "echo", Echo)
        with pytest.raises(TimeoutError, match=r"no reply from echo/k within 0\.2 s"):
            node.send_message("hang", AgentId("echo", "k"), timeout=0.2)
        assert Echo.cancelled.wait(WAIT_S)


def test_a_token_cancelled_from_another_thread_cancels_the_call(make_node: MakeNode) -> None:
    token = CancellationToken()

    def cancel_once_started() -> None:
        if Echo.started.wait(WAIT_S):
            token.cancel()

    with make_node() as node:
        node.register(Echo, "echo", Echo)
        canceller = threading.Thread(target=cancel_once_started)
        canceller.start()
        with pytest.raises(concurrent.futures.CancelledError, match="send_message"):
            node.send_message("hang", AgentId("echo", "k"), cancellation_token=token)
        canceller.join(WAIT_S)
        assert Echo.cancelled.wait(WAIT_S)


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl+C handler for the test, whatever the process inherited (a shell's
    background job starts with SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("default_sigint")
def test_ctrl_c_in_a_blocking_call_cancels_the_call(make_node: MakeNode) -> None:
    main = threading.main_thread()
    assert threading.current_thread() is main

    def interrupt_once_started() -> None:
        if Echo.started.wait(WAIT_S):
            assert main.ident is not None
            signal.pthread_kill(main.ident, signal.SIGINT)

    with make_node() as node:
        node.register(Echo, "echo", Echo)
        interrupter = threading.Thread(target=interrupt_once_started)
        interrupter.start()
        with pytest.raises(KeyboardInterrupt):
            node.send_message("hang", AgentId("echo", "k"))
        interrupter.join(WAIT_S)
        assert Echo.cancelled.wait(WAIT_S)
        assert node.send_message("after", AgentId("echo", "k")) == "AFTER from echo/k"


def test_a_blocking_call_on_the_nodes_own_thread_raises_instead_of_deadlocking(make_node: MakeNode) -> None:
    node = make_node().start()
    seen: dict[str, Any] = {}

    class Reentrant(RoutedAgent):
        @rpc
        async def reenter(self, message: str, ctx: MessageContext) -> str:
            seen["peers"] = node.peers  # a plain read works on the node's thread
            with pytest.raises(RuntimeError, match="close"):
                node.close()
            node.send_message("hi", AgentId("echo", "k"))  # would wait for itself for ever
            return "unreachable"

    node.register(Echo, "echo", Echo)
    node.register(Reentrant, "reentrant", lambda: Reentrant("calls back"))
    with pytest.raises(RuntimeError, match=r"own thread .* would wait for itself for ever"):
        node.send_message("go", AgentId("reentrant", "k"))
    assert seen == {"peers": []}
    # The awaitable form works there: the handler awaits instead of blocking the loop.
    assert node.call(node.aio.send_message, "inside", AgentId("echo", "k")) == "INSIDE from echo/k"


def test_the_awaitable_form_on_a_loop_in_the_main_thread_as_in_jupyter(make_node: MakeNode) -> None:
    node = make_node(name="notebook")
    gate = asyncio.Event()

    class Gated(RoutedAgent):
        @rpc
        async def wait_for_gate(self, message: str, ctx: MessageContext) -> str:
            Echo.started.set()
            await gate.wait()
            return "through"

    async def notebook() -> None:
        assert threading.current_thread() is threading.main_thread()
        await node.aio.start()
        await node.aio.register(Echo, "echo", Echo)
        await node.aio.register(Gated, "gated", lambda: Gated("waits"))
        assert await node.aio.send_message("cell", AgentId("echo", "k")) == "CELL from echo/k"
        with pytest.raises(ValueError, match="bad value"):
            await node.aio.send_message("value-error", AgentId("echo", "k"))

        # While a call is awaited, the main loop keeps running: a task on it opens the gate.
        call = asyncio.create_task(node.aio.send_message("x", AgentId("gated", "k")))
        assert await asyncio.to_thread(Echo.started.wait, WAIT_S)
        assert not call.done()
        await node.aio.call(gate.set)
        assert await call == "through"

        # Meanwhile other threads use the blocking form.
        replies = await asyncio.gather(
            *(asyncio.to_thread(node.send_message, f"t{i}", AgentId("echo", f"k{i}")) for i in range(4))
        )
        assert replies == [f"T{i} from echo/k{i}" for i in range(4)]
        await node.aio.close()

    asyncio.run(notebook())
    assert not node.running
    assert loop_threads(node) == []


def test_an_awaited_call_that_raises_leaves_no_unretrieved_future_behind(make_node: MakeNode) -> None:
    """The caller caught the error: asyncio must not also log "exception was never retrieved"."""
    node = make_node().start()
    node.register(Echo, "echo", Echo)
    reported: list[dict[str, object]] = []

    async def notebook() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: reported.append(context))
        for bad, error in (("value-error", ValueError), ("key-error", KeyError)):
            with pytest.raises(error):
                await node.aio.send_message(bad, AgentId("echo", "k"))
        gc.collect()  # an unretrieved future reports when it is collected

    asyncio.run(notebook())
    assert reported == []


def test_cancelling_an_awaited_call_cancels_the_handler(make_node: MakeNode) -> None:
    node = make_node().start()
    node.register(Echo, "echo", Echo)

    async def notebook() -> None:
        call = asyncio.create_task(node.aio.send_message("hang", AgentId("echo", "k")))
        assert await asyncio.to_thread(Echo.started.wait, WAIT_S)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(notebook())
    assert Echo.cancelled.wait(WAIT_S)


def test_a_start_failure_surfaces_and_leaves_no_thread(make_node: MakeNode) -> None:
    first = make_node().start()
    assert first.address is not None
    port = int(first.address.rsplit(":", 1)[1])
    second = make_node(name="second", port=port)
    with pytest.raises(OSError, match="Address already in use"), second:
        pass  # pragma: no cover - never entered
    assert loop_threads(second) == []
    with pytest.raises(NodeStoppedError, match="BackgroundNode second is closed: start"):
        second.start()


def test_stop_start_close_and_calls_after_close(make_node: MakeNode) -> None:
    node = make_node(name="cycle")
    node.register(Echo, "echo", Echo)  # before start, as with an async node
    node.start()
    incarnation = node.node.incarnation
    node.stop()
    node.stop()  # idempotent
    assert not node.running
    node.start()  # registrations are kept, the incarnation changes
    assert node.node.incarnation != incarnation
    assert node.send_message("again", AgentId("echo", "k")) == "AGAIN from echo/k"
    assert "running" in repr(node)
    node.close()
    node.close()  # idempotent
    assert "closed" in repr(node)
    with pytest.raises(NodeStoppedError, match=r"closed: send_message\(\) to echo/k on node cycle cannot run"):
        node.send_message("late", AgentId("echo", "k"))


def test_a_publish_handler_error_surfaces_from_stop(make_node: MakeNode) -> None:
    inbox: list[Any] = []
    arrived = threading.Event()
    node = make_node(ignore_unhandled_exceptions=False).start()
    node.register(Listener, "listener", lambda: Listener(inbox, arrived), skip_class_subscriptions=True)
    node.add_subscription(TypeSubscription("news", "listener"))
    node.publish_message("explode", TopicId("news", "k"))
    assert arrived.wait(WAIT_S)
    with pytest.raises(ValueError, match="listener exploded"):
        node.stop_when_idle()


def test_register_instance_and_call_any_node_method(make_node: MakeNode) -> None:
    with make_node(name="inst") as node:
        agent_id = node.register_instance(Echo(), AgentId("single", "only"))
        assert agent_id == AgentId("single", "only")
        assert node.send_message("one", agent_id) == "ONE from single/only"
        assert node.call(node.node.agent_metadata, agent_id)["type"] == "single"
        assert node.call(threading.current_thread) is loop_threads(node)[0]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_timeouts_must_be_positive(make_node: MakeNode, bad: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        BackgroundNode(discovery="none", call_timeout_s=bad)
    node = make_node()
    with pytest.raises(ValueError, match="positive number of seconds"):
        node.start(timeout=bad)


def test_a_call_that_outlives_its_bound_raises_timeout_error(make_node: MakeNode) -> None:
    with make_node() as node:
        node.register(Echo, "echo", Echo)
        hang = asyncio.Event()
        with pytest.raises(TimeoutError, match=r"wait\(\) on node .* did not finish within 0\.1 s"):
            node.call(hang.wait, timeout=0.1)
        # math.inf means no limit.
        assert node.send_message("inf", AgentId("echo", "k"), timeout=math.inf) == "INF from echo/k"
