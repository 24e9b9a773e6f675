"""``agentmesh keygen DIR NAME``: a CURVE key pair for a node (or for a whole mesh)."""

from __future__ import annotations

import re
from pathlib import Path

import click
import zmq.auth

from .._security import generate_keys

_NAME = re.compile(r"^[\w.\-]+\Z")


@click.command("keygen")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--force", is_flag=True, help="Replace existing key files of this name.")
def keygen(directory: Path, name: str, force: bool) -> None:
    """Create a CURVE key pair: DIRECTORY/NAME.key (public) and DIRECTORY/NAME.key_secret (secret,
    mode 600), and print the public key.

    One shared mesh key: give every node the same NAME.key_secret (AGENTMESH_SECRET_KEY_FILE).
    Per-node keys: one pair per node; copy each NAME.key into the authorized keys directory
    (AGENTMESH_AUTHORIZED_KEYS_DIR) of the nodes that admit it, and name the key in seeds:
    tcp://HOST:PORT#<public key>.
    """
    if not _NAME.match(name):
        raise click.BadParameter(f"{name!r}: use letters, digits, '_', '.' and '-'", param_hint="NAME")
    existing = [p for p in (directory / f"{name}.key", directory / f"{name}.key_secret") if p.exists()]
    if existing and not force:
        raise click.ClickException(
            f"{existing[0]} exists: choose another NAME, or --force to replace it (nodes that admit the old "
            "key will then refuse this node)"
        )
    try:
        public_file, secret_file = generate_keys(directory, name)
    except OSError as exc:
        raise click.ClickException(f"cannot write the keys in {directory}: {exc.strerror or exc}") from exc
    public_key = zmq.auth.load_certificate(public_file)[0].decode()
    click.echo(f"public key:  {public_key}")
    click.echo(f"public key file:  {public_file}  (per-node keys: copy it into the authorized keys dir of the others)")
    click.echo(f"secret key file:  {secret_file}  (keep it private: AGENTMESH_SECRET_KEY_FILE={secret_file})")
    click.echo(f"as a seed:  tcp://HOST:PORT#{public_key}")
