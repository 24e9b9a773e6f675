"""The traffic of one ``AgentRpc`` message stream with the mesh, in both directions.

An :class:`Exchange` sits between one stream (the bridge's stream to a host, or one worker's
stream in host mode) and a mesh node (the proxy node that stands for that side's agents):

- mesh to stream: a proxy agent's call becomes an ``RpcRequest`` with a request id unique to this
  process (workers number theirs from "1", AutoGen issue #7016), awaited within ``rpc_timeout_s``;
  a proxy agent's publish becomes one CloudEvent per mesh message id, however many proxies of the
  stream's side it reached.
- stream to mesh: every ``RpcRequest`` is answered exactly once, with the mesh's reply or an error
  text (a handler that returns ``None`` included); every CloudEvent is published into the mesh in
  arrival order, except the stream's echoes of the mesh's own publishes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from .._errors import AgentUnreachableError, NodeStoppedError, RemoteAgentError, SerializationError
from .._ids import AgentId, TopicId, is_valid_topic_type
from .._message_context import MessageContext
from .._serialization import MSGPACK_DATA_CONTENT_TYPE, UnknownPayload
from ._config import BridgeConfig
from ._protos import Protos
from ._translate import (
    as_message,
    body_from_event,
    body_from_payload,
    body_of,
    error_text,
    event_from_body,
    payload_from_body,
    sender_from_event,
)

logger = logging.getLogger("mesh.bridge")

WARN_INTERVAL_S = 10.0  # at most one warning per kind and interval: a noisy peer must not flood the log


def is_none(result: Any) -> bool:
    """Whether a reply is None (the proxy node passes bodies through: None arrives as its msgpack body)."""
    if result is None:
        return True
    return (
        type(result) is UnknownPayload
        and result.type_name == "NoneType"
        and result.data_content_type == MSGPACK_DATA_CONTENT_TYPE
    )


def remember(window: OrderedDict[str, None], key: str, size: int) -> None:
    window[key] = None
    if len(window) > size:
        window.popitem(last=False)


class Exchange:
    """See the module docstring.

    Args:
        protos: the loaded stubs.
        node: the mesh node that sends and publishes for the stream's side.
        send: writes one ``agents.Message`` to the stream.
        peer: names the other side in errors ("the AutoGen host at 10.0.0.5:50051").
        config: timings.
        event_id_prefix: prefix of the ids of CloudEvents sent to the stream.
        echo_prefix: CloudEvents from the stream whose id starts with this are echoes of publishes
            the mesh sent; they are dropped (None: the stream never echoes).
        inject_prefix: prefix of the mesh message ids of events injected from the stream.
        skip_prefix: mesh publishes whose message id starts with this came from the stream's own
            side and are not sent back (None: send everything).
    """

    def __init__(
        self,
        protos: Protos,
        node: Any,
        send: Callable[[Any], Awaitable[None]],
        peer: str,
        config: BridgeConfig,
        *,
        event_id_prefix: str,
        echo_prefix: str | None,
        inject_prefix: str,
        skip_prefix: str | None,
    ) -> None:
        self._p = protos
        self._node = node
        self._send = send
        self._peer = peer
        self._config = config
        self._event_id_prefix = event_id_prefix
        self._echo_prefix = echo_prefix
        self._inject_prefix = inject_prefix
        self._skip_prefix = skip_prefix
        self._id_prefix = f"agentmesh-{uuid.uuid4().hex[:16]}-"
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._inbound: set[asyncio.Task[None]] = set()
        self._forwarded: OrderedDict[str, None] = OrderedDict()
        self._received: OrderedDict[str, None] = OrderedDict()
        self._events: asyncio.Queue[Any] = asyncio.Queue(config.max_queued_events)
        self._injector: asyncio.Task[None] | None = None
        self._closed: str | None = None
        self._last_warning: dict[str, float] = {}
        self.stats: dict[str, int] = {
            "calls_out": 0,
            "calls_in": 0,
            "publishes_out": 0,
            "events_in": 0,
            "echoes_dropped": 0,
            "duplicates_dropped": 0,
            "untranslatable": 0,
            "late_responses": 0,
            "publishes_lost": 0,
        }

    def start(self) -> None:
        self._injector = asyncio.get_running_loop().create_task(self._inject_loop(), name=f"inject from {self._peer}")

    @property
    def closed(self) -> bool:
        return self._closed is not None

    async def close(self, reason: str) -> None:
        """Fail in-flight outbound calls at once (AgentUnreachableError with ``reason``) and stop
        serving inbound ones."""
        if self._closed is not None:
            return
        self._closed = reason
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AgentUnreachableError(reason))
        self._pending.clear()
        tasks = list(self._inbound)
        if self._injector is not None:
            tasks.append(self._injector)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning.get(kind, -WARN_INTERVAL_S) >= WARN_INTERVAL_S:
            self._last_warning[kind] = now
            logger.warning(message, *args)

    # -- mesh to stream ---------------------------------------------------------------------------

    async def call(self, target: AgentId, message: Any, ctx: MessageContext) -> Any:
        """Send an RPC to ``target`` on the stream's side and return its reply."""
        if self._closed is not None:
            raise AgentUnreachableError(f"cannot reach {target}: {self._closed}")
        pb = self._p.pb
        body = body_of(message, f"call to {target}")
        request_id = f"{self._id_prefix}{next(self._ids):x}"
        request = pb.RpcRequest(
            request_id=request_id,
            target=pb.AgentId(type=target.type, key=target.key),
            payload=payload_from_body(self._p, body),
        )
        if ctx.sender is not None:
            request.source.CopyFrom(pb.AgentId(type=ctx.sender.type, key=ctx.sender.key))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        ctx.cancellation_token.link_future(future)
        self.stats["calls_out"] += 1
        limit = self._config.rpc_timeout_s
        try:
            await self._send(pb.Message(request=request))
            async with asyncio.timeout(limit):
                response = await future
        except TimeoutError:
            raise TimeoutError(
                f"no reply from {target} through {self._peer} within {limit} s (an AutoGen host drops requests "
                "for agent types nobody registered, and an AutoGen worker never answers when its handler "
                "returns None or a type it cannot serialize)"
            ) from None
        except ConnectionError as exc:
            raise AgentUnreachableError(f"cannot reach {target}: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
        if response.error:
            # AutoGen's protocol carries only the error's text.
            raise RemoteAgentError(f"AutoGen agent {target.type}", response.error)
        return as_message(body_from_payload(response.payload, f"reply from {target}"))

    async def publish(self, message: Any, ctx: MessageContext) -> None:
        """Send a mesh publish to the stream's side, once per message id."""
        message_id = ctx.message_id
        if self._skip_prefix is not None and message_id.startswith(self._skip_prefix):
            return  # it came from the stream's side, which delivered it there itself
        if message_id in self._forwarded:
            return  # another subscription of the same side matched the same publish
        remember(self._forwarded, message_id, self._config.dedup_window)
        topic_id = ctx.topic_id
        assert topic_id is not None
        if self._closed is not None:
            self.stats["publishes_lost"] += 1
            self._warn("lost", "publish to %s not forwarded: %s", topic_id, self._closed)
            return
        try:
            body = body_of(message, f"publish to {topic_id}")
            event = event_from_body(
                self._p, body, topic_id, ctx.sender, f"{self._event_id_prefix}{message_id}", extra={}
            )
        except SerializationError as exc:
            self.stats["untranslatable"] += 1
            self._warn("untranslatable", "publish not forwarded to %s: %s", self._peer, exc)
            return
        self.stats["publishes_out"] += 1
        try:
            await self._send(self._p.pb.Message(cloudEvent=event))
        except ConnectionError as exc:
            self.stats["publishes_lost"] += 1
            self._warn("lost", "publish to %s not forwarded: %s", topic_id, exc)

    # -- stream to mesh ---------------------------------------------------------------------------

    def on_message(self, message: Any) -> Awaitable[None] | None:
        """Dispatch one message read from the stream; await the result if it is not None (an
        event waiting for room in the injection queue)."""
        kind = message.WhichOneof("message")
        if kind == "request":
            task = asyncio.get_running_loop().create_task(self._answer(message.request))
            self._inbound.add(task)
            task.add_done_callback(self._inbound.discard)
        elif kind == "response":
            future = self._pending.pop(message.response.request_id, None)
            if future is None or future.done():
                self.stats["late_responses"] += 1
            else:
                future.set_result(message.response)
        elif kind == "cloudEvent":
            event = message.cloudEvent
            if self._echo_prefix is not None and event.id.startswith(self._echo_prefix):
                self.stats["echoes_dropped"] += 1
                return None
            if event.id:
                # The .NET gateway sends an event once per subscribed agent type to a connection
                # that registered several; the mesh gets it once.
                if event.id in self._received:
                    self.stats["duplicates_dropped"] += 1
                    return None
                remember(self._received, event.id, self._config.dedup_window)
            return self._events.put(event)
        return None

    async def _answer(self, request: Any) -> None:
        """Answer one request from the stream exactly once (unless the stream goes away first)."""
        pb = self._p.pb
        self.stats["calls_in"] += 1
        response = pb.RpcResponse(request_id=request.request_id)
        target = f"{request.target.type}/{request.target.key}"
        try:
            recipient = AgentId(request.target.type, request.target.key)
            body = body_from_payload(request.payload, f"call to {recipient}")
            sender = AgentId(request.source.type, request.source.key) if request.HasField("source") else None
            result = await self._node.send_message(
                as_message(body), recipient, sender=sender, timeout=self._config.rpc_timeout_s
            )
            if is_none(result):
                raise ValueError(
                    f"the handler of {recipient} returned None, which AutoGen's gRPC protocol cannot carry "
                    "(its worker cannot serialize None); return a dataclass, pydantic model or protobuf message"
                )
            response.payload.CopyFrom(payload_from_body(self._p, body_of(result, f"reply of {recipient}")))
        except asyncio.CancelledError:
            raise  # the stream is gone: nobody to answer
        except NodeStoppedError as exc:
            response.error = f"the mesh node serving {target} stopped: {exc}"
        except Exception as exc:
            if isinstance(exc, SerializationError):
                self.stats["untranslatable"] += 1
            response.error = error_text(exc)
        try:
            await self._send(pb.Message(response=response))
        except ConnectionError as exc:
            logger.info("reply to request %s for %s not sent: %s", request.request_id, target, exc)

    async def _inject_loop(self) -> None:
        while True:  # ends when close() cancels it
            event = await self._events.get()
            try:
                await self._inject(event)
            except (NodeStoppedError, AgentUnreachableError) as exc:
                self._warn("inject", "event %r from %s not published in the mesh: %s", event.id, self._peer, exc)

    async def _inject(self, event: Any) -> None:
        self.stats["events_in"] += 1
        if not is_valid_topic_type(event.type):
            self._warn(
                "topic", "event %r from %s has an invalid topic type %r: dropped", event.id, self._peer, event.type
            )
            return
        try:
            body = body_from_event(self._p, event)
        except SerializationError as exc:
            self.stats["untranslatable"] += 1
            self._warn("untranslatable", "event from %s dropped: %s", self._peer, exc)
            return
        await self._node.publish_message(
            as_message(body),
            TopicId(event.type, event.source),
            sender=sender_from_event(event),
            message_id=f"{self._inject_prefix}{event.id}",
        )
