"""A stateful agent for ownership and handover tests: it counts what it is sent and carries its
count through save_state/load_state, so a key whose state is lost or duplicated shows in its count."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mesh import MessageContext, RoutedAgent, message_handler


@dataclass
class Add:
    n: int


class Counter(RoutedAgent):
    def __init__(self) -> None:
        super().__init__("counts")
        self.count = 0

    @message_handler
    async def on_add(self, message: Add, ctx: MessageContext) -> int:
        self.count += message.n
        return self.count

    async def save_state(self) -> Mapping[str, Any]:
        return {"count": self.count}

    async def load_state(self, state: Mapping[str, Any]) -> None:
        self.count = state["count"]
