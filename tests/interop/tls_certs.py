"""Throw-away TLS certificates for the interop tests, made at test time with the ``cryptography``
package (a ``dev`` dependency; no private key is ever committed): a CA, a server certificate for
127.0.0.1 and a client certificate, all signed by that CA, plus a second CA that signed nothing the
server trusts."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Issuer = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA: the server must refuse it
    stranger_key: Path


def _name(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"agentmesh test {name}")])


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None, extensions: list[x509.ExtensionType]
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
    return builder.sign(signer, hashes.SHA256())


def _ca(directory: Path, name: str) -> tuple[Issuer, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
        key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
    )  # fmt: skip
    cert = _certificate(name, key, None, [x509.BasicConstraints(ca=True, path_length=None), usage])
    cert_file, _ = _write(directory, name, cert, key)
    return (cert, key), cert_file


def _leaf(directory: Path, name: str, issuer: Issuer, extensions: list[x509.ExtensionType]) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(name, key, issuer, [x509.BasicConstraints(ca=False, path_length=None), *extensions])
    return _write(directory, name, cert, key)


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_file = _ca(directory, "ca")
    other_ca, _ = _ca(directory, "other-ca")
    loopback = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    )
    server = _leaf(directory, "server", ca, [loopback, x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    client_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    client = _leaf(directory, "client", ca, [client_usage])
    stranger = _leaf(directory, "stranger", other_ca, [client_usage])
    return Certs(ca_file, *server, *client, *stranger)
