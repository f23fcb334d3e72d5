"""A throwaway PKI and a SASL_SSL broker with SCRAM users, for the security tests."""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from streamtune.core.secure_kafka import BrokerSecurity

#: SCRAM users: the super user that applies ACLs, and one per role of schemas.topic_access.
USERS = ("admin", "producer", "worker", "serve", "trainer", "monitor")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_pki(root: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A new CA and a broker certificate for ``host`` and localhost; returns
    (keystore PEM: key + chain, CA PEM)."""
    root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("streamtune test CA"))
        .issuer_name(_name("streamtune test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("kafka-broker"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    keystore, truststore = root / "broker.pem", root / "ca.pem"
    keystore.write_bytes(_pem_key(key) + cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    keystore.chmod(0o600)
    truststore.write_bytes(ca_pem)
    return keystore, truststore


def make_security(root: Path) -> BrokerSecurity:
    keystore, truststore = make_pki(root)
    return BrokerSecurity(
        keystore_pem=keystore,
        truststore_pem=truststore,
        users={user: secrets.token_urlsafe(18).replace("-", "x") for user in USERS},
    )
