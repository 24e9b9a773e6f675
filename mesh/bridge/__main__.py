"""Run a gRPC bridge in its own process: ``python -m mesh.bridge --host HOST:PORT --seed tcp://...``.

It starts a mesh node, runs a :class:`~mesh.bridge.GrpcBridge` in it (several such processes may run
for one host: one is elected, the others stand by), prints one JSON line ``{"address", "node_id",
"pid", "name"}`` to stdout once the node is up, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence

from ._bridge import GrpcBridge
from ._config import BridgeConfig


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mesh.bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True, help="the AutoGen host's gRPC address, HOST:PORT")
    parser.add_argument("--seed", action="append", default=[], help="a mesh node to join (tcp://host:port); repeatable")
    parser.add_argument("--mesh", default="default", help="the mesh name")
    parser.add_argument("--name", default=None, help="this node's name")
    parser.add_argument("--node-id", default=None, help="a stable node id")
    parser.add_argument("--bind", default="127.0.0.1", help="the address the mesh node binds")
    parser.add_argument("--port", type=int, default=0, help="the port the mesh node binds (0: any)")
    parser.add_argument(
        "--discovery",
        choices=("mdns", "none"),
        default=None,
        help="peer discovery (default: none with seeds, else mdns)",
    )
    parser.add_argument("--secret-key-file", default=None, help="CURVE secret key file of a secured mesh")
    parser.add_argument("--authorized-keys-dir", default=None, help="allowlist directory (per-node keys)")
    parser.add_argument("--tls", action="store_true", help="connect to the host with TLS (system roots)")
    parser.add_argument(
        "--tls-ca-file", default=None, help="PEM CA certificates to verify the host with (implies --tls)"
    )
    parser.add_argument("--tls-cert-file", default=None, help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key-file", default=None, help="PEM key of --tls-cert-file")
    parser.add_argument("--rpc-timeout", type=float, default=BridgeConfig.rpc_timeout_s, help="seconds")
    parser.add_argument("--poll-interval", type=float, default=BridgeConfig.poll_interval_s, help="seconds")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from .._node import MeshNode

    discovery = args.discovery or ("none" if args.seed else "mdns")
    node = MeshNode(
        name=args.name,
        mesh=args.mesh,
        host=args.bind,
        port=args.port,
        seeds=args.seed,
        discovery=discovery,
        node_id=args.node_id,
        secret_key_file=args.secret_key_file,
        authorized_keys_dir=args.authorized_keys_dir,
    )
    config = BridgeConfig(rpc_timeout_s=args.rpc_timeout, poll_interval_s=args.poll_interval)
    await node.start()
    try:
        bridge = GrpcBridge(
            node,
            args.host,
            config=config,
            secret_key_file=args.secret_key_file,
            authorized_keys_dir=args.authorized_keys_dir,
            tls=args.tls,
            tls_ca_file=args.tls_ca_file,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
        )
        async with bridge:
            serving = asyncio.create_task(node.stop_when_signal())
            await asyncio.sleep(0)  # the signal handlers are installed before we say we are ready
            ready = {"address": node.address, "node_id": node.node_id, "pid": os.getpid(), "name": node.name}
            print(json.dumps(ready), flush=True)
            await serving
    finally:
        await node.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
