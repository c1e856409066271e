"""TLS material for the secured test cluster, generated per session with ``cryptography``.

A throw-away CA signs one broker certificate (SAN ``IP:127.0.0.1``, so
librdkafka's hostname verification stays on) and one client certificate
for the mTLS listener (``CN=<client_cn>``; the brokers map the DN to the
principal ``User:<client_cn>``). Files are PEM: the broker's key and chain
in one file (Kafka's ``ssl.keystore.type=PEM``), the client's key encrypted
with ``client_key_password`` (librdkafka's ``ssl.key.password``).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    broker_keystore: Path
    client_cert: Path
    client_key: Path
    client_key_password: str


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    san_ip: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san_ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_tls(folder: Path, client_cn: str, client_key_password: str) -> TlsFiles:
    """Write the CA, the broker keystore and the mTLS client's certificate and key into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _cert("presence-bridge test CA", ca_key, _name("presence-bridge test CA"), ca_key, ca=True)
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = _cert("localhost", broker_key, ca_cert.subject, ca_key, san_ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _cert(client_cn, client_key, ca_cert.subject, ca_key)

    files = TlsFiles(
        ca=folder / "ca.pem",
        broker_keystore=folder / "broker.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        client_key_password=client_key_password,
    )
    files.ca.write_bytes(_pem(ca_cert))
    files.broker_keystore.write_bytes(
        broker_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + _pem(broker_cert)
        + _pem(ca_cert)
    )
    files.client_cert.write_bytes(_pem(client_cert))
    files.client_key.write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(client_key_password.encode()),
        )
    )
    return files
