"""One connection to an AutoGen gRPC host as a worker: the channel, the ``OpenChannel`` stream and
the unary control calls, each bounded in time. Any sign that the host is gone surfaces as
:class:`HostConnectionLost`; reconnecting is the bridge's job (a new connection, a new client id).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from ._config import BridgeConfig
from ._protos import CLIENT_ID_HEADER, Protos

logger = logging.getLogger("mesh.bridge")


class HostConnectionLost(ConnectionError):
    """The host closed the stream, did not answer in time, or could not be reached."""


def channel_options(config: BridgeConfig) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", config.max_message_size),
        ("grpc.max_receive_message_length", config.max_message_size),
        # The channel's own reconnection back-off stays within the bridge's, so a restarted host
        # is found again within about reconnect_max_s.
        ("grpc.initial_reconnect_backoff_ms", max(1, int(config.reconnect_initial_s * 1000))),
        ("grpc.min_reconnect_backoff_ms", max(1, int(config.reconnect_initial_s * 1000))),
        ("grpc.max_reconnect_backoff_ms", max(1, int(config.reconnect_max_s * 1000))),
        # The stock worker enables a retry policy; one connection per attempt needs none.
        ("grpc.enable_retries", 0),
    ]


class HostConnection:
    """A worker's connection to the host at ``address`` under a fresh client id."""

    def __init__(self, protos: Protos, address: str, config: BridgeConfig, credentials: Any = None) -> None:
        self._p = protos
        self.address = address
        self._credentials = credentials  # grpc.ChannelCredentials for a TLS host, else plaintext
        self._config = config
        self.client_id = f"agentmesh-bridge-{uuid.uuid4().hex}"
        self._metadata = ((CLIENT_ID_HEADER, self.client_id),)
        self._channel: Any = None
        self._stub: Any = None
        self._stream: Any = None
        self._write_lock = asyncio.Lock()
        self._lost: HostConnectionLost | None = None

    async def open(self) -> None:
        """Connect and open the message stream, within ``connect_timeout_s``."""
        grpc = self._p.grpc
        options = channel_options(self._config)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.address, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.address, self._credentials, options=options)
        self._stub = self._p.pb_grpc.AgentRpcStub(self._channel)
        try:
            async with asyncio.timeout(self._config.connect_timeout_s):
                await self._channel.channel_ready()
                self._stream = self._stub.OpenChannel(metadata=self._metadata)
                await self._stream.wait_for_connection()
        except TimeoutError:
            await self.close()
            raise HostConnectionLost(
                f"the AutoGen host at {self.address} did not accept a connection within "
                f"{self._config.connect_timeout_s} s"
            ) from None
        except grpc.aio.AioRpcError as exc:
            await self.close()
            raise HostConnectionLost(f"the AutoGen host at {self.address} refused the stream: {exc.details()}") from exc

    async def read(self) -> Any:
        """The next message from the host.

        Raises:
            HostConnectionLost: the stream ended or failed.
        """
        grpc = self._p.grpc
        try:
            message = await self._stream.read()
        except grpc.aio.AioRpcError as exc:
            raise self._lose(f"the stream from the AutoGen host at {self.address} failed: {exc.details()}") from exc
        except asyncio.CancelledError:
            raise
        if message is grpc.aio.EOF:
            raise self._lose(f"the AutoGen host at {self.address} closed the stream")
        return message

    async def send(self, message: Any) -> None:
        """Write one message to the stream (writes are serialised)."""
        if self._lost is not None:
            raise self._lost
        grpc = self._p.grpc
        async with self._write_lock:
            try:
                await self._stream.write(message)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as exc:
                raise self._lose(f"cannot write to the AutoGen host at {self.address}: {exc}") from exc

    async def unary(self, method: str, request: Any) -> Any:
        """Call a unary method of ``AgentRpc`` with the client id, within ``call_timeout_s``.

        Raises:
            HostConnectionLost: the host is unreachable or did not answer in time.
            grpc.aio.AioRpcError: the host refused the call (e.g. INVALID_ARGUMENT).
        """
        if self._lost is not None:
            raise self._lost
        grpc = self._p.grpc
        try:
            return await getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self._config.call_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.CANCELLED,
            ):
                raise self._lose(f"{method} to the AutoGen host at {self.address} failed: {exc.details()}") from exc
            raise

    def _lose(self, reason: str) -> HostConnectionLost:
        if self._lost is None:
            self._lost = HostConnectionLost(reason)
        return self._lost

    async def close(self) -> None:
        """Cancel the stream and close the channel (idempotent)."""
        self._lose(f"the connection to the AutoGen host at {self.address} was closed")
        if self._stream is not None:
            self._stream.cancel()
            self._stream = None
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()
