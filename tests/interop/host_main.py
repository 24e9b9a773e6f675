"""A stock AutoGen gRPC host in its own process, for the interop tests.

Run: ``python host_main.py [--port PORT]``. It mounts autogen-ext's ``GrpcWorkerAgentRuntimeHostServicer``
on a ``grpc.aio`` server bound to 127.0.0.1 (port 0 picks a free one), prints one JSON line
``{"port", "pid"}`` once it serves, and stops at SIGTERM or when its standard input closes (the
test that started it is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

import grpc
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHostServicer
from autogen_ext.runtimes.grpc.protos import agent_worker_pb2_grpc


async def serve(port: int) -> None:
    server = grpc.aio.server()
    agent_worker_pb2_grpc.add_AgentRpcServicer_to_server(GrpcWorkerAgentRuntimeHostServicer(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    eof = asyncio.ensure_future(reader.read())
    stop = asyncio.ensure_future(done.wait())
    await asyncio.wait({eof, stop}, return_when=asyncio.FIRST_COMPLETED)
    eof.cancel()
    stop.cancel()
    await server.stop(None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="host %(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
