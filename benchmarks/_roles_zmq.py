"""Raw pyzmq baselines: DEALER -> ROUTER one-way, and DEALER/ROUTER request/reply.

Each comes in two drives: ``blocking`` (plain sockets, a tight loop: the limit of Python itself)
and ``asyncio`` (``zmq.asyncio``, one await per message, as an asyncio program would write it).
Messages are the standard Payload packed once with msgpack (94 bytes) and sent as they are:
this is the cost of moving the bytes, with no encoding, decoding or dispatch per message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from ._child import Counter, drive_caller, drive_sender, drive_sender_blocking
from ._framework import latency_us
from ._procs import CommandReader, read_command, say
from ._workload import payload

DATA = msgpack.packb(dataclasses.asdict(payload()))
LOOPBACK = "tcp://127.0.0.1:*"


def _setup_router(sock: zmq.Socket[Any]) -> str:
    sock.linger = 0
    sock.bind(LOOPBACK)
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _bind() -> tuple[zmq.Socket[bytes], str]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
    return sock, _setup_router(sock)


def _bind_asyncio() -> tuple[zmq.asyncio.Socket, str]:
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    return sock, _setup_router(sock)


def _dealer(address: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    return sock


def _dealer_asyncio(address: str) -> zmq.asyncio.Socket:
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    return sock


# -- one-way --------------------------------------------------------------------------------------


def sink(config: dict[str, Any]) -> Any:
    counter = Counter(config["warm"], config["total"])
    if config["mode"] == "asyncio":
        return _sink_asyncio(counter)
    sock, address = _bind()
    say("ready", address=address)
    recv = sock.recv_multipart
    hit = counter.hit
    for _ in range(counter.total):
        recv()
        hit()
    read_command()  # stay until the parent is done with us
    return None


async def _sink_asyncio(counter: Counter) -> None:
    sock, address = _bind_asyncio()
    commands = CommandReader()
    say("ready", address=address)
    recv = sock.recv_multipart
    hit = counter.hit
    for _ in range(counter.total):
        await recv()
        hit()
    await commands.next()


def sender(config: dict[str, Any]) -> Any:
    if config["mode"] == "asyncio":
        return _sender_asyncio(config["address"])
    sock = _dealer(config["address"])
    send = sock.send
    drive_sender_blocking(lambda seq: send(DATA))
    read_command()
    return None


async def _sender_asyncio(address: str) -> None:
    sock = _dealer_asyncio(address)
    commands = CommandReader()
    send = sock.send

    async def publish(seq: int) -> None:
        await send(DATA)

    await drive_sender(publish, commands)
    await commands.next()


# -- request/reply --------------------------------------------------------------------------------


def echo(config: dict[str, Any]) -> Any:
    """Sends every request back as its reply (the parent kills it at the end)."""
    if config["mode"] == "asyncio":
        return _echo_asyncio()
    sock, address = _bind()
    say("ready", address=address)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        send(recv())


async def _echo_asyncio() -> None:
    sock, address = _bind_asyncio()
    say("ready", address=address)
    recv, send = sock.recv_multipart, sock.send_multipart
    while True:
        await send(await recv())


def caller(config: dict[str, Any]) -> Any:
    if config["mode"] == "asyncio":
        return _caller_asyncio(config["address"])
    return _caller_blocking(config["address"])


async def _caller_asyncio(address: str) -> None:
    sock = _dealer_asyncio(address)
    commands = CommandReader()
    loop = asyncio.get_running_loop()
    pending: dict[bytes, asyncio.Future[bytes]] = {}
    ids = itertools.count()
    reader: asyncio.Task[None] | None = None

    async def read_replies() -> None:
        while True:
            request_id, body = await sock.recv_multipart()
            future = pending.pop(request_id, None)
            if future is not None and not future.done():
                future.set_result(body)

    async def call(seq: int) -> None:
        if reader is None:
            # One call at a time needs no demultiplexing: send, then await the reply.
            await sock.send_multipart([b"", DATA])
            await sock.recv_multipart()
            return
        request_id = next(ids).to_bytes(8, "little")
        future = loop.create_future()
        pending[request_id] = future
        await sock.send_multipart([request_id, DATA])
        await future

    async def concurrent() -> None:
        nonlocal reader
        reader = asyncio.create_task(read_replies())

    await drive_caller(call, commands, before_concurrent=concurrent)
    await commands.next()


def _caller_blocking(address: str) -> None:
    sock = _dealer(address)
    send, recv = sock.send, sock.recv
    say("ready")
    go = read_command()
    n, warmup, window = go["n"], go["warmup"], go["concurrency"]
    for _ in range(warmup):
        send(DATA)
        recv()
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        started = clock()
        send(DATA)
        recv()
        samples[i] = clock() - started
    latency = latency_us(samples)
    # `window` requests in flight: a reply lets the next request go.
    started = clock()
    for _ in range(min(window, n)):
        send(DATA)
    for sent in range(min(window, n), n + min(window, n)):
        recv()
        if sent < n:
            send(DATA)
    elapsed_s = (clock() - started) / 1e9
    say("done", **latency, per_s=n / elapsed_s)
    read_command()


ROLES = {"sink": sink, "sender": sender, "echo": echo, "caller": caller}
