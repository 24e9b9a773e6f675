"""A stock AutoGen gRPC host in its own process, for the interop tests.

Run: ``python host_main.py [--port PORT] [--tls-cert CERT --tls-key KEY [--tls-client-ca CA]]``.
It mounts autogen-ext's ``GrpcWorkerAgentRuntimeHostServicer`` on a ``grpc.aio`` server bound to
127.0.0.1 (port 0 picks a free one; TLS with ``--tls-cert``), prints one JSON line
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
from pathlib import Path

import grpc
from autogen_ext.runtimes.grpc import GrpcWorkerAgentRuntimeHostServicer
from autogen_ext.runtimes.grpc.protos import agent_worker_pb2_grpc


def server_credentials(args: argparse.Namespace) -> grpc.ServerCredentials | None:
    """The stock servicer on a TLS server: how a deployment puts TLS in front of a stock host."""
    if not args.tls_cert:
        return None
    pair = (Path(args.tls_key).read_bytes(), Path(args.tls_cert).read_bytes())
    roots = Path(args.tls_client_ca).read_bytes() if args.tls_client_ca else None
    return grpc.ssl_server_credentials([pair], roots, require_client_auth=roots is not None)


async def serve(port: int, credentials: grpc.ServerCredentials | None) -> None:
    server = grpc.aio.server()
    agent_worker_pb2_grpc.add_AgentRpcServicer_to_server(GrpcWorkerAgentRuntimeHostServicer(), server)
    address = f"127.0.0.1:{port}"
    bound = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
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
    parser.add_argument("--tls-cert", default=None)
    parser.add_argument("--tls-key", default=None)
    parser.add_argument("--tls-client-ca", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="host %(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.port, server_credentials(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
