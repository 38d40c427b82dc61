"""Test certificates, made fresh in a temporary directory by every test that needs them (never committed keys).

A small PKI built with the ``cryptography`` package: a CA, a server certificate for ``localhost`` and ``127.0.0.1``
(subject alternative names), client certificates (one valid, one expired, one signed by another CA), each written
as PEM files. Keys are EC P-256: generating one takes well under a millisecond, where RSA-2048 takes tens.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its key, in memory and as PEM files."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_file: Path
    key_file: Path

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True, slots=True)
class Pki:
    directory: Path
    ca: Issued
    other_ca: Issued  # trusted by nobody in the tests
    server: Issued  # CN=localhost, SAN DNS:localhost and IP:127.0.0.1, signed by ca
    client: Issued  # C=US, O=acme, OU=eng, CN=alice, signed by ca
    expired_client: Issued  # CN=old, signed by ca, expired yesterday
    foreign_client: Issued  # CN=mallory, signed by other_ca

    def server_args(self, client_auth: str | None = None) -> list[str]:
        """A node's flags for its SSL listeners: ``server``'s certificate and key, and with ``client_auth``
        (requested, required) client certificates checked against ``ca``."""
        args = ["--ssl-cert-file", str(self.server.cert_file), "--ssl-key-file", str(self.server.key_file)]
        if client_auth is not None:
            args += ["--ssl-ca-file", str(self.ca.cert_file), "--ssl-client-auth", client_auth]
        return args


def name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    """A name with one attribute per RDN, in the order given (the order of the certificate's encoding)."""
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def _write(
    directory: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, password: bytes | None
) -> tuple[Path, Path]:
    cert_file = directory / f"{stem}.crt"
    key_file = directory / f"{stem}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    key_file.chmod(0o600)
    return cert_file, key_file


def make_ca(directory: Path, stem: str, common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name((NameOID.ORGANIZATION_NAME, "rafka tests"), (NameOID.COMMON_NAME, common_name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - DAY)
        .not_valid_after(now + 30 * DAY)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = _write(directory, stem, cert, key, None)
    return Issued(cert, key, cert_file, key_file)


def issue(
    directory: Path,
    stem: str,
    ca: Issued,
    subject: x509.Name,
    *,
    server: bool = False,
    expired: bool = False,
    password: bytes | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Issued:
    """A leaf certificate signed by ``ca``: for a server (SAN localhost and 127.0.0.1) or a client."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = (now - 10 * DAY, now - DAY) if expired else (now - DAY, now + 30 * DAY)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                if server
                else [ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_file, key_file = _write(directory, stem, cert, key, password)
    return Issued(cert, key, cert_file, key_file)


def server_cert(directory: Path, stem: str, ca: Issued, common_name: str = "localhost") -> Issued:
    return issue(directory, stem, ca, name((NameOID.COMMON_NAME, common_name)), server=True)


def make_pki(directory: Path) -> Pki:
    """The standard set of test certificates, as PEM files under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca", "rafka test CA")
    other_ca = make_ca(directory, "other-ca", "some other CA")
    alice = name(
        (NameOID.COUNTRY_NAME, "US"),
        (NameOID.ORGANIZATION_NAME, "acme"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "eng"),
        (NameOID.COMMON_NAME, "alice"),
    )
    return Pki(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        server=server_cert(directory, "server", ca),
        client=issue(directory, "alice", ca, alice),
        expired_client=issue(directory, "old", ca, name((NameOID.COMMON_NAME, "old")), expired=True),
        foreign_client=issue(directory, "mallory", other_ca, name((NameOID.COMMON_NAME, "mallory"))),
    )
