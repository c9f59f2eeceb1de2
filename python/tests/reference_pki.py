"""Certificate material made with Python ``cryptography`` the reference deployment's way.

The profiles follow /work/shared/spec/agent-api.md ("Reference certificate
profile"): an RSA-4096 CA and RSA-2048 leaves, SHA-256 signatures.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from pathlib import Path
from typing import Iterable, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_SUBJECT = x509.Name([
    x509.NameAttribute(NameOID.COMMON_NAME, "DECNET SWARM Root CA"),
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DECNET"),
])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_reference_ca(ca_dir: Path, *, key_kind: str = "rsa4096",
                      subject: x509.Name = CA_SUBJECT) -> Path:
    """Writes ``ca.key`` (PKCS#8, unencrypted, 0600) and ``ca.crt`` into ``ca_dir`` (0700).

    ``key_kind`` "rsa4096" is the reference; "p256" makes a quick throw-away CA.
    """
    ca_dir = Path(ca_dir)
    ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)
    if key_kind == "rsa4096":
        key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(ca_dir / "ca.key", _key_pem(key), 0o600)
    _write(ca_dir / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return ca_dir


def load_ca(ca_dir: Path):
    """(key, certificate) of the CA in ``ca_dir``."""
    ca_dir = Path(ca_dir)
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    return key, cert


def make_reference_leaf(ca_dir: Path, name: str, sans: Iterable[str], out_dir: Path, *,
                        key_kind: str = "rsa2048", days: int = 825,
                        not_before: Optional[datetime.datetime] = None) -> str:
    """Issues a leaf with the reference profile and writes ``ca.crt``, ``worker.crt`` and
    ``worker.key`` into ``out_dir``. Returns the leaf's fingerprint."""
    ca_key, ca_cert = load_ca(ca_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if key_kind == "rsa2048":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    names = []
    listed = set()
    for entry in sans:
        listed.add(entry)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(entry)))
        except ValueError:
            names.append(x509.DNSName(entry))
    if name not in listed:
        names.append(x509.DNSName(name))
    start = not_before or (_now() - datetime.timedelta(minutes=5))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "DECNET"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "swarm-worker"),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out_dir / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out_dir / "worker.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out_dir / "worker.key", _key_pem(key), 0o600)
    return fingerprint_pem_file(out_dir / "worker.crt")


def fingerprint_pem_file(path: Path) -> str:
    """Lowercase hex SHA-256 of the DER of the certificate in a PEM file (computed in Python)."""
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
