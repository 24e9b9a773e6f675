"""BackgroundNode in real scripts: examples/embed_sync.py joining a mesh, and a script that exits
without closing its node (the atexit hook closes it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

from discovery import MemberStatus
from mesh import BackgroundNode, MessageContext, RoutedAgent, TypeSubscription, event
from mesh.testing import wait_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed_sync.py"
# A script starts an interpreter, imports the mesh and joins: generous for a loaded 2-core machine.
SCRIPT_TIMEOUT_S = 60.0
WAIT_S = 10.0


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        check=False,
    )


class Listener(RoutedAgent):
    def __init__(self, inbox: list[Any], arrived: threading.Event) -> None:
        super().__init__("listens")
        self._inbox = inbox
        self._arrived = arrived

    @event
    async def on_news(self, message: str, ctx: MessageContext) -> None:
        self._inbox.append((message, ctx.topic_id))
        self._arrived.set()


def test_embed_sync_runs_alone() -> None:
    result = run_script(str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "HI\n"


def test_embed_sync_joins_a_mesh_and_publishes_to_it() -> None:
    inbox: list[Any] = []
    arrived = threading.Event()
    # The example joins the default mesh name through its seed; discovery is off, so nothing
    # else can meet it.
    with BackgroundNode(discovery="none", name="hub", call_timeout_s=WAIT_S) as hub:
        hub.register(Listener, "listener", lambda: Listener(inbox, arrived), skip_class_subscriptions=True)
        hub.add_subscription(TypeSubscription("news", "listener"))
        assert hub.address is not None
        result = run_script(str(EXAMPLE), hub.address)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "HI\n"
        assert arrived.wait(WAIT_S)
        assert [(m, t.type, t.source) for m, t in inbox] == [("hello, mesh", "news", "embed_sync")]


def test_a_node_left_open_is_closed_at_interpreter_exit(tmp_path: Path) -> None:
    script = tmp_path / "forgetful.py"
    script.write_text(
        textwrap.dedent(
            """
            from mesh import AgentId, BackgroundNode, MessageContext, RoutedAgent, rpc

            class Tidy(RoutedAgent):
                @rpc
                async def ping(self, message: str, ctx: MessageContext) -> str:
                    return "pong"

                async def close(self) -> None:
                    print("agent closed on", threading.current_thread().name, flush=True)

            import threading
            node = BackgroundNode(discovery="none", name="forgetful").start()
            node.register(Tidy, "tidy", lambda: Tidy("tidy"))
            print(node.send_message("ping", AgentId("tidy", "k")), flush=True)
            unstarted = BackgroundNode(discovery="none")  # never used: no thread, nothing to close
            registered = BackgroundNode(discovery="none")
            registered.register(Tidy, "tidy", lambda: Tidy("tidy"))  # loop thread up, node not started
            print("exiting without close()", flush=True)
            """
        )
    )
    result = run_script(str(script))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "pong",
        "exiting without close()",
        "agent closed on mesh-node-forgetful",
    ]
    assert "Traceback" not in result.stderr


def test_a_peer_sees_a_script_that_exits_without_close_leave(tmp_path: Path) -> None:
    script = tmp_path / "leaver.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from mesh import BackgroundNode

            node = BackgroundNode(discovery="none", mesh=sys.argv[2], name="leaver", seeds=[sys.argv[1]]).start()
            node.wait_for_peers(1)
            print("joined", flush=True)
            """
        )
    )
    mesh_name = f"exit-{uuid.uuid4().hex[:8]}"
    with BackgroundNode(discovery="none", mesh=mesh_name, name="stayer", call_timeout_s=WAIT_S) as stayer:
        assert stayer.address is not None
        result = run_script(str(script), stayer.address, mesh_name)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "joined\n"
        # The atexit hook stopped the node gracefully: it announced its leave (a node that just
        # vanished would be declared dead by failure detection instead).
        stayer.call(wait_for, lambda: left(stayer) == ["leaver"], WAIT_S, "the leaver's announced leave")
        assert stayer.peers == []


def left(node: BackgroundNode) -> list[str]:
    membership = node.node._link.membership
    assert membership is not None
    return [record.name for record, status in membership.member_status().values() if status is MemberStatus.LEFT]
