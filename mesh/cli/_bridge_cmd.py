"""``agentmesh bridge``: a gRPC bridge between the mesh and a standard AutoGen host, in its own
process (the same as ``python -m mesh.bridge``, with the CLI's options and environment variables)."""

from __future__ import annotations

import argparse
import asyncio

import click

# Defaults of mesh.bridge.BridgeConfig, repeated here so that --help works without the grpc extra.
RPC_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 1.0


def _host_address(value: str) -> str:
    from ..bridge._config import check_host_address  # no grpc needed

    try:
        return check_host_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("bridge")
@click.option(
    "--host",
    "autogen_host",
    required=True,
    envvar="AGENTMESH_BRIDGE_HOST",
    show_envvar=True,
    metavar="HOST:PORT",
    callback=lambda ctx, param, value: _host_address(value),
    help="The AutoGen host's gRPC address.",
)
@click.option(
    "--seed",
    "seeds",
    multiple=True,
    envvar="AGENTMESH_SEEDS",
    show_envvar=True,
    metavar="ENDPOINT",
    help="A mesh node to join through (repeatable).",
)
@click.option("--mesh", default="default", show_default=True, envvar="AGENTMESH_MESH", show_envvar=True)
@click.option("--name", default=None, envvar="AGENTMESH_NAME", show_envvar=True, help="This node's name.")
@click.option("--node-id", default=None, envvar="AGENTMESH_NODE_ID", show_envvar=True, help="A stable node id.")
@click.option(
    "--bind",
    default="127.0.0.1",
    show_default=True,
    envvar="AGENTMESH_HOST",
    show_envvar=True,
    help="The address the mesh node binds.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    envvar="AGENTMESH_PORT",
    show_envvar=True,
    help="The port the mesh node binds (0: any).",
)
@click.option(
    "--discovery",
    type=click.Choice(["mdns", "none"]),
    default=None,
    envvar="AGENTMESH_DISCOVERY",
    show_envvar=True,
    help="Peer discovery (default: none with seeds, else mdns).",
)
@click.option(
    "--secret-key-file",
    default=None,
    envvar="AGENTMESH_SECRET_KEY_FILE",
    show_envvar=True,
    help="CURVE secret key file of a secured mesh.",
)
@click.option(
    "--authorized-keys-dir",
    default=None,
    envvar="AGENTMESH_AUTHORIZED_KEYS_DIR",
    show_envvar=True,
    help="The allowlist directory (per-node keys).",
)
@click.option("--tls", is_flag=True, help="Connect to the host with TLS, verified against the system's roots.")
@click.option(
    "--tls-ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM CA certificates to verify the host's certificate with (implies --tls).",
)
@click.option(
    "--tls-cert-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM client certificate, for a host that requires one (mutual TLS).",
)
@click.option(
    "--tls-key-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM private key of --tls-cert-file.",
)
@click.option(
    "--rpc-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=RPC_TIMEOUT_S,
    show_default=True,
    help="Bound in seconds on every call across the bridge.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=POLL_INTERVAL_S,
    show_default=True,
    help="Seconds between two polls of the host's agent types.",
)
def bridge(
    autogen_host: str, seeds: tuple[str, ...], mesh: str, name: str | None, node_id: str | None, bind: str, port: int,
    discovery: str | None, secret_key_file: str | None, authorized_keys_dir: str | None, tls: bool,
    tls_ca_file: str | None, tls_cert_file: str | None, tls_key_file: str | None, rpc_timeout: float,
    poll_interval: float,
) -> None:  # fmt: skip
    """Bridge the mesh to a standard AutoGen gRPC host (GrpcWorkerAgentRuntimeHost): agents on both
    sides publish to and call each other.

    Several bridges may run for one host (give them the same HOST:PORT): one is elected, the others
    stand by and take over when it stops. The stock host serves plaintext; --tls and --tls-* reach
    a host served with TLS (e.g. its servicer on a grpc server with ssl_server_credentials, or
    behind a TLS proxy). Prints one JSON line (address, node_id, pid, name) once up; serves until
    SIGTERM or SIGINT. Needs the grpc extra: pip install 'agentmesh-zmq[grpc]'.
    """
    if (tls_cert_file is None) != (tls_key_file is None):
        raise click.UsageError("give both --tls-cert-file and --tls-key-file (a client certificate and its key)")
    try:
        from ..bridge.__main__ import serve
    except ImportError as exc:
        raise click.ClickException(
            f"the bridge needs the grpc extra: pip install 'agentmesh-zmq[grpc]' ({exc})"
        ) from exc
    args = argparse.Namespace(
        host=autogen_host, seed=list(seeds), mesh=mesh, name=name, node_id=node_id, bind=bind, port=port,
        discovery=discovery, secret_key_file=secret_key_file, authorized_keys_dir=authorized_keys_dir, tls=tls,
        tls_ca_file=tls_ca_file, tls_cert_file=tls_cert_file, tls_key_file=tls_key_file, rpc_timeout=rpc_timeout,
        poll_interval=poll_interval,
    )  # fmt: skip
    asyncio.run(serve(args))
