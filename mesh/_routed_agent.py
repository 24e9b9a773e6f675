"""RoutedAgent: dispatches each message to the handler declared for its exact type."""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Callable, Coroutine, Sequence
from functools import wraps
from typing import (
    Any,
    Literal,
    Protocol,
    TypeVar,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    runtime_checkable,
)

from ._base_agent import BaseAgent
from ._errors import CantHandleException
from ._message_context import MessageContext
from ._serialization import MessageSerializer, try_get_known_serializers_for_type

logger = logging.getLogger("mesh")

AgentT = TypeVar("AgentT")
ReceivesT = TypeVar("ReceivesT")
ProducesT = TypeVar("ProducesT", covariant=True)


class AnyType:
    """Stands for ``typing.Any`` in a handler's declared return types."""


def get_types(t: object) -> Sequence[type[Any]] | None:
    origin = get_origin(t)
    if origin is typing.Union or origin is types.UnionType:
        return get_args(t)
    if t is Any:
        return (AnyType,)
    if isinstance(t, type):
        return (t,)
    if t is None:
        return (type(None),)
    return None


@runtime_checkable
class MessageHandler(Protocol[AgentT, ReceivesT, ProducesT]):  # type: ignore[misc]
    target_types: Sequence[type]
    produces_types: Sequence[type]
    is_message_handler: Literal[True]
    router: Callable[[ReceivesT, MessageContext], bool]

    @staticmethod
    async def __call__(agent_instance: AgentT, message: ReceivesT, ctx: MessageContext) -> ProducesT: ...


HandlerFunc = Callable[[Any, Any, MessageContext], Coroutine[Any, Any, Any]]
Router = Callable[[Any, MessageContext], bool]


def _handler_types(func: HandlerFunc) -> tuple[Sequence[type[Any]], Sequence[type[Any]]]:
    type_hints = get_type_hints(func)
    if "message" not in type_hints:
        raise AssertionError("message parameter not found in function signature")
    if "return" not in type_hints:
        raise AssertionError("return parameter not found in function signature")
    target_types = get_types(type_hints["message"])
    if target_types is None:
        raise AssertionError("Message type not found. Please provide a type hint for the message parameter.")
    return_types = get_types(type_hints["return"])
    if return_types is None:
        raise AssertionError("Return type not found. Please use `None` as the type hint of the return type.")
    return target_types, return_types


def _make_handler(func: HandlerFunc, *, strict: bool, router: Router, events_only: bool) -> Any:
    target_types, return_types = _handler_types(func)
    target_set = frozenset(target_types)
    return_set = frozenset(return_types)

    @wraps(func)
    async def wrapper(self: Any, message: Any, ctx: MessageContext) -> Any:
        if type(message) not in target_set:
            if strict:
                raise CantHandleException(f"Message type {type(message)} not in target types {target_types}")
            logger.warning("Message type %s not in target types %s", type(message), target_types)
        return_value = await func(self, message, ctx)
        if events_only:
            if return_value is not None:
                if strict:
                    raise ValueError(f"Return type {type(return_value)} is not None.")
                logger.warning("Return type %s is not None. It will be ignored.", type(return_value))
            return None
        if AnyType not in return_set and type(return_value) not in return_set:
            if strict:
                raise ValueError(f"Return type {type(return_value)} not in return types {return_types}")
            logger.warning("Return type %s not in return types %s", type(return_value), return_types)
        return return_value

    handler = cast(Any, wrapper)
    handler.target_types = list(target_types)
    handler.produces_types = list(return_types)
    handler.is_message_handler = True
    handler.router = router
    return handler


def _decorate(func: Any, strict: bool, make_router: Callable[[], Router], events_only: bool) -> Any:
    def decorator(f: HandlerFunc) -> Any:
        return _make_handler(f, strict=strict, router=make_router(), events_only=events_only)

    if func is None:
        return decorator
    if callable(func):
        return decorator(func)
    raise ValueError("Invalid arguments")


def message_handler(
    func: Any = None, *, strict: bool = True, match: Callable[[Any, MessageContext], bool] | None = None
) -> Any:
    """Mark an ``async def handler(self, message: T, ctx: MessageContext) -> R`` method as a handler of
    events and RPCs of type ``T`` (a union handles several). With several handlers for one type, the
    first in alphabetical order whose ``match`` accepts the message runs."""

    def router() -> Router:
        return match or (lambda _message, _ctx: True)

    return _decorate(func, strict, router, events_only=False)


def event(func: Any = None, *, strict: bool = True, match: Callable[[Any, MessageContext], bool] | None = None) -> Any:
    """Like :func:`message_handler`, for published messages only; the handler returns ``None``."""

    def router() -> Router:
        return lambda m, c: (not c.is_rpc) and (match(m, c) if match else True)

    return _decorate(func, strict, router, events_only=True)


def rpc(func: Any = None, *, strict: bool = True, match: Callable[[Any, MessageContext], bool] | None = None) -> Any:
    """Like :func:`message_handler`, for direct messages (``send_message``) only."""

    def router() -> Router:
        return lambda m, c: c.is_rpc and (match(m, c) if match else True)

    return _decorate(func, strict, router, events_only=False)


class RoutedAgent(BaseAgent):
    """Routes each message to a handler method decorated with :func:`message_handler`, :func:`event`
    or :func:`rpc`, chosen by the message's exact type and then by ``match``.

    A message no handler accepts goes to :meth:`on_unhandled_message`, which logs it; the caller of
    an RPC then gets ``None``. Handlers may take msgpack-native types (``str``, ``int``, ``dict``, ...)
    as well as dataclasses, pydantic models and protobuf messages.
    """

    def __init__(self, description: str) -> None:
        self._handlers: dict[type[Any], list[Any]] = {}
        for handler in self._discover_handlers():
            for target_type in handler.target_types:
                self._handlers.setdefault(target_type, []).append(handler)
        super().__init__(description)

    async def on_message_impl(self, message: Any, ctx: MessageContext) -> Any | None:
        """Route the message; do not override (add handlers instead)."""
        handlers = self._handlers.get(type(message))
        if handlers is not None:
            for h in handlers:
                if h.router(message, ctx):
                    return await h(self, message, ctx)
        # A subclass may return a reply from on_unhandled_message, as in AutoGen.
        return await self.on_unhandled_message(message, ctx)  # type: ignore[func-returns-value]

    async def on_unhandled_message(self, message: Any, ctx: MessageContext) -> None:
        """Called for a message no handler accepts; logs it at INFO."""
        logger.info("Unhandled message of type %s", type(message).__name__)
        return None

    @classmethod
    def _discover_handlers(cls) -> Sequence[MessageHandler[Any, Any, Any]]:
        handlers: list[MessageHandler[Any, Any, Any]] = []
        for attr in dir(cls):  # dir() is sorted: handlers are tried in alphabetical order
            handler = getattr(cls, attr, None)
            if callable(handler) and hasattr(handler, "is_message_handler"):
                handlers.append(cast(MessageHandler[Any, Any, Any], handler))
        return handlers

    @classmethod
    def _handles_types(cls) -> list[tuple[type[Any], list[MessageSerializer[Any]]]]:
        types_: list[tuple[type[Any], list[MessageSerializer[Any]]]] = list(cls.internal_extra_handles_types)
        for handler in cls._discover_handlers():
            for t in handler.target_types:
                serializers = try_get_known_serializers_for_type(t)
                if serializers:
                    types_.append((t, serializers))
        return types_

    @classmethod
    def _produced_types(cls) -> list[type[Any]]:
        """:meta private: the handlers' declared return types (the node learns to decode replies)."""
        return [t for h in cls._discover_handlers() for t in h.produces_types]
