"""A throwaway certificate authority and broker certificate for the local SASL_SSL Kafka.

Generated when the launcher starts a secure broker, so that TLS is tested the way companies
run it (a private CA the clients are told to trust) without any certificate in the repo.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

VALID_FOR = dt.timedelta(days=30)


@dataclass(frozen=True)
class BrokerTLS:
    """Files the broker and its clients need: the CA (PEM, for clients and the broker's own
    inter-broker client) and the broker's key and certificate (PKCS#12, for Java)."""

    ca_file: Path
    keystore: Path
    keystore_password: str


def generate(directory: Path, host: str) -> BrokerTLS:
    """A new CA and a certificate for `host` (an IP address or a DNS name) signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopline local CA")])
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        _builder(subject, ca_name, key.public_key(), now)
        .add_extension(x509.SubjectAlternativeName(_alt_names(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    password = secrets.token_urlsafe(16)
    keystore = pkcs12.serialize_key_and_certificates(
        b"broker",
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password.encode()),
    )
    tls = BrokerTLS(directory / "ca.pem", directory / "broker.p12", password)
    tls.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    tls.keystore.write_bytes(keystore)
    tls.keystore.chmod(0o600)
    return tls


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
    )


def _alt_names(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    return names
