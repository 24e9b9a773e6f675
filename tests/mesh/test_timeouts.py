"""``send_message(timeout=...)``: its own bound expiring says so; any other TimeoutError (the
handler's own, a SendTimeoutError from flow control) reaches the caller as it was raised."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import anyio
import pytest

from mesh import AgentId, MeshNode, MessageContext, RoutedAgent, rpc
from mesh.testing import FAST_CONFIG

WAIT_S = 10.0


@dataclass
class Ask:
    what: str


class Slow(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("slow or failing")

    @rpc
    async def on_ask(self, message: Ask, ctx: MessageContext) -> str:
        if message.what == "raise":
            raise TimeoutError("the database did not answer")
        sleeper = asyncio.ensure_future(asyncio.sleep(WAIT_S))
        ctx.cancellation_token.link_future(sleeper)  # cancelled when the caller's bound expires
        await sleeper
        return "late"


@pytest.mark.parametrize("remote", [False, True], ids=["same-node", "other-node"])
async def test_the_bound_expiring_and_a_handlers_own_timeout_error_are_told_apart(remote: bool) -> None:
    host = MeshNode(name="host", discovery="none", config=FAST_CONFIG)
    async with host:
        await Slow.register(host, "slow", Slow)
        caller = MeshNode(name="caller", discovery="none", seeds=[host.address], config=FAST_CONFIG) if remote else host
        try:
            if remote:
                await caller.start()
                await caller.wait_for_peers(1, timeout=WAIT_S)
            with anyio.fail_after(WAIT_S):
                with pytest.raises(TimeoutError, match="the database did not answer"):
                    await caller.send_message(Ask("raise"), AgentId("slow", "k"), timeout=5.0)
                with pytest.raises(TimeoutError, match=r"no reply from slow/k within 0\.2 s"):
                    await caller.send_message(Ask("sleep"), AgentId("slow", "k"), timeout=0.2)
        finally:
            if remote:
                await caller.stop()
