"""The log's keys, kept in ``<data_dir>/audit/``: the Ed25519 signing key and the legacy subject-pseudonym key.

Both secrets are generated on first start, written 0600 and never overwritten: creation links a fully
written temporary file into place, so two workers starting at once end up with the same key. A secret
file readable by group or others is refused. The public key is published next to them as PEM.

Data subjects are no longer pseudonymized with the log's own subject key: the log writes the keyring's
pseudonyms (``governance.protect.pseudonym``), the values the consent registry and the store hold. The
subject key stays so that entries written before that change (64 hex characters) can still be looked up
with ``LogKeys.pseudonymize``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.audit.errors import AuditKeyError
from governance.keyfiles import create_secret_file

AUDIT_DIR = "audit"
SIGNING_KEY_FILE = "log-signing-key.pem"
PUBLIC_KEY_FILE = "log-public-key.pem"
SUBJECT_KEY_FILE = "subject-pseudonym.key"
SUBJECT_KEY_BYTES = 32


def audit_dir(data_dir: Path) -> Path:
    return data_dir / AUDIT_DIR


@dataclass(frozen=True)
class PublicKey:
    """A log's public key: what an auditor needs to check tree heads."""

    raw: bytes
    """The 32-byte Ed25519 public key."""

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise AuditKeyError(f"an Ed25519 public key has 32 bytes, not {len(self.raw)}")

    @property
    def key_id(self) -> str:
        """SHA-256 of the raw public key, hex: how entries, tree heads and bundles name the key."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def pem(self) -> str:
        key = Ed25519PublicKey.from_public_bytes(self.raw)
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def verifies(self, signature: bytes, message: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Read a PEM public key, or the base64 of the raw 32 bytes."""
        text = text.strip()
        try:
            if text.startswith("-----BEGIN"):
                key = serialization.load_pem_public_key(text.encode())
                if not isinstance(key, Ed25519PublicKey):
                    raise AuditKeyError("the public key is not an Ed25519 key")
                return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
            return cls(base64.b64decode(text, validate=True))
        except (ValueError, TypeError) as exc:
            raise AuditKeyError(f"not a public key: {exc}") from exc

    @classmethod
    def from_file(cls, path: Path) -> PublicKey:
        try:
            return cls.from_text(path.read_text(encoding="ascii"))
        except OSError as exc:
            raise AuditKeyError(f"cannot read public key {path}: {exc}") from exc


@dataclass(frozen=True)
class LogKeys:
    """The secrets of one log: sign tree heads; the legacy subject key of entries written before the keyring."""

    signing_key: Ed25519PrivateKey
    subject_key: bytes

    @property
    def public(self) -> PublicKey:
        return PublicKey(
            self.signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)

    def pseudonymize(self, subject: str) -> str:
        """HMAC-SHA256(subject key, UTF-8 subject id), hex: how entries named subjects before the keyring's
        pseudonyms (``psn:v1:``) replaced it. For looking up old entries only; new ones never carry it."""
        return pseudonym(self.subject_key, subject)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> LogKeys:
        """Load the keys from ``<data_dir>/audit/``, generating any that do not exist yet."""
        folder = audit_dir(data_dir)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _create_secret(folder / SIGNING_KEY_FILE, _new_signing_key)
        _create_secret(folder / SUBJECT_KEY_FILE, lambda: secrets.token_bytes(SUBJECT_KEY_BYTES).hex().encode() + b"\n")
        keys = cls.load(data_dir)
        _publish(folder / PUBLIC_KEY_FILE, keys.public.pem())
        return keys

    @classmethod
    def load(cls, data_dir: Path) -> LogKeys:
        """Load existing keys; ``AuditKeyError`` if they are missing or exposed."""
        folder = audit_dir(data_dir)
        pem = _read_secret(folder / SIGNING_KEY_FILE)
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise AuditKeyError(f"{folder / SIGNING_KEY_FILE} is not a private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"{folder / SIGNING_KEY_FILE} is not an Ed25519 key")
        try:
            subject_key = bytes.fromhex(_read_secret(folder / SUBJECT_KEY_FILE).decode("ascii").strip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditKeyError(f"{folder / SUBJECT_KEY_FILE} is not a hex key: {exc}") from exc
        if len(subject_key) < 16:
            raise AuditKeyError(f"{folder / SUBJECT_KEY_FILE} holds a key of {len(subject_key)} bytes; need 16+")
        return cls(signing_key=key, subject_key=subject_key)


def pseudonym(key: bytes, subject: str) -> str:
    return hmac.new(key, subject.encode("utf-8"), hashlib.sha256).hexdigest()


def load_public_key(data_dir: Path) -> PublicKey:
    """The published public key of the log in ``data_dir`` (no secret needed)."""
    path = audit_dir(data_dir) / PUBLIC_KEY_FILE
    if not path.exists():
        raise AuditKeyError(f"no audit public key at {path}: start the log once, or pass the key with --key")
    return PublicKey.from_file(path)


def load_subject_key(data_dir: Path) -> bytes:
    path = audit_dir(data_dir) / SUBJECT_KEY_FILE
    try:
        return bytes.fromhex(_read_secret(path).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuditKeyError(f"{path} is not a hex key: {exc}") from exc


def _new_signing_key() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _create_secret(path: Path, make: Callable[[], bytes]) -> None:
    """Write ``make()`` to ``path`` with mode 0600 unless the file exists (atomic, never overwrites)."""
    if not path.exists():
        create_secret_file(path, make())


def _read_secret(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AuditKeyError(f"missing audit key {path}") from None
    if mode & 0o077:
        raise AuditKeyError(
            f"{path} is readable by others (mode {mode & 0o777:o}); run `chmod 600 {path}`"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read {path}: {exc}") from exc


def _publish(path: Path, text: str) -> None:
    if path.exists() and path.read_text(encoding="ascii") == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    tmp.write_text(text, encoding="ascii")
    tmp.chmod(0o644)
    os.replace(tmp, path)
