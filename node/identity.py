"""The node's identity: a key pair and a self-signed certificate, made on first start.

The node id is the SHA-256 of the certificate (the Syncthing model), written in base32
groups so a person can read it out and paste it. Key files are owner-only.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from node.atomic_file import atomic_write

IDENTITY_DIR = "identity"
KEY_FILE = "node.key"
CERT_FILE = "node.crt"
NODE_ID_RE = re.compile(r"^[A-Z2-7]{7}(-[A-Z2-7]{1,7}){7}$")


class IdentityError(RuntimeError):
    """The identity files are missing, unreadable or do not belong together."""


def node_id_for(cert_der: bytes) -> str:
    """``XXXXXXX-XXXXXXX-...``: base32 of SHA-256 of the DER certificate, in groups of 7."""
    return node_id_from_digest(hashlib.sha256(cert_der).digest())


def node_id_from_digest(digest: bytes) -> str:
    """The node id of the certificate whose SHA-256 is ``digest``."""
    text = base64.b32encode(digest).decode().rstrip("=")
    return "-".join(text[i:i + 7] for i in range(0, len(text), 7))


def node_id_digest(node_id: str) -> bytes:
    """The SHA-256 a node id spells (the inverse of :func:`node_id_from_digest`)."""
    compact = normalize_node_id(node_id).replace("-", "")
    return base64.b32decode(compact + "=" * (-len(compact) % 8))


def normalize_node_id(text: str) -> str:
    """Accept a pasted id with any case, spaces or dashes; raise if it is not one."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not re.fullmatch(r"[A-Z2-7]{52}", compact):
        raise IdentityError(f"{text!r} is not a node id")
    return "-".join(compact[i:i + 7] for i in range(0, len(compact), 7))


@dataclass(frozen=True)
class NodeIdentity:
    key_path: Path
    cert_path: Path
    cert_pem: bytes
    cert_der: bytes
    node_id: str

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"{self.key_path} is not an EC private key")
        return key


def write_private(path: Path, data: bytes) -> None:
    """Readable by this user only, and whole after a crash."""
    atomic_write(path, data, 0o600)


def _make_certificate(key: ec.EllipticCurvePrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * 30))
        # Self-signed and its own trust anchor: peers trust it by its hash, not by a CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )


def load_or_create_identity(data_dir: Path, common_name: str = "pacsmesh node") -> NodeIdentity:
    directory = data_dir / IDENTITY_DIR
    key_path, cert_path = directory / KEY_FILE, directory / CERT_FILE
    if not key_path.exists() and not cert_path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_certificate(key, common_name)
        write_private(key_path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    try:
        cert_pem = cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read the node identity in {directory}: {exc}") from None
    if loaded.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise IdentityError(f"{key_path} and {cert_path} do not belong together")
    der = cert.public_bytes(serialization.Encoding.DER)
    return NodeIdentity(key_path, cert_path, cert_pem, der, node_id_for(der))
