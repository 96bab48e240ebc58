"""The keyring: the master key plus the layer's long-lived secrets, stored wrapped in ``protect_key``.

Two secrets live here: the pseudonym key (HMAC-SHA256, the root of every pseudonym and, by HKDF, of
every per-recipient pseudonym key) and the consent-receipt signing key (Ed25519). Each is generated once,
wrapped under the current master key version, and read back by whoever needs it; concurrent first
starts converge on one row. Rotating the master key re-wraps the rows (``rewrap``) and changes nothing
else, so pseudonyms stay stable and receipts keep verifying after the old master key is retired.

Key objects show their purpose and version, never their bytes, and refuse to be pickled.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from governance.config import Settings
from governance.protect.errors import DecryptionError, KeyConfigurationError
from governance.protect.masterkey import MasterKeys
from governance.protect.tables import ProtectKey

PSEUDONYM = "pseudonym"
RECEIPT_SIGNING = "receipt-signing"
RESPONSE_SIGNING = "response-signing"
QUARANTINE = "quarantine"
_WRAP_LABEL = "citygov/v1/protect-key-wrap"
_TABLE = ProtectKey.__table__  # type: ignore[attr-defined]

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class HmacKey:
    """An HMAC-SHA256 key for one purpose and version; ``derive`` makes sub-keys with HKDF."""

    __slots__ = ("_key", "_mac", "purpose", "version")

    def __init__(self, key: bytes, *, purpose: str, version: int) -> None:
        self._key = key
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self.purpose = purpose
        self.version = version

    def digest(self, message: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(message)
        return mac.digest()

    def derive(self, label: str, *, purpose: str) -> HmacKey:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode("utf-8"))
        return HmacKey(hkdf.derive(self._key), purpose=purpose, version=self.version)

    def __repr__(self) -> str:
        return f"HmacKey(purpose={self.purpose!r}, version={self.version})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key objects cannot be pickled")


class SealingKey:
    """An AES-256-GCM key for one purpose and version (the stored secret, through HKDF)."""

    __slots__ = ("_aead", "purpose", "version")

    def __init__(self, secret: bytes, *, purpose: str, version: int) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"citygov/v1/sealing/{purpose}".encode())
        self._aead = AESGCM(hkdf.derive(secret))
        self.purpose = purpose
        self.version = version

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, data, aad)

    def __repr__(self) -> str:
        return f"SealingKey(purpose={self.purpose!r}, version={self.version})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key objects cannot be pickled")


class ReceiptKey:
    """The Ed25519 key that signs consent receipts, named by ``kid``."""

    __slots__ = ("kid", "private_key", "public_key", "version")

    def __init__(self, seed: bytes, *, version: int) -> None:
        self.private_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.private_key.public_key()
        self.version = version
        self.kid = receipt_kid(self.public_key, version)

    def __repr__(self) -> str:
        return f"ReceiptKey(kid={self.kid!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key objects cannot be pickled")


def receipt_kid(public_key: Ed25519PublicKey, version: int) -> str:
    """``citygov-receipt-v<N>-<first 16 hex of SHA-256 of the raw public key>``."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"citygov-receipt-v{version}-{hashlib.sha256(raw).hexdigest()[:16]}"


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


class Keyring:
    """Master key + stored secrets. One per process is enough; it caches what it unwrapped."""

    def __init__(self, master: MasterKeys, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.master = master
        self.engine = engine
        self.clock = clock
        self._hmac: HmacKey | None = None
        self._receipt: ReceiptKey | None = None
        self._quarantine: SealingKey | None = None
        self._recipients: dict[str, HmacKey] = {}

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, *, clock: Clock = utc_now) -> Keyring:
        return cls(MasterKeys.from_settings(settings), engine, clock=clock)

    def __repr__(self) -> str:
        return f"Keyring(master={self.master!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("key objects cannot be pickled")

    def pseudonym_key(self) -> HmacKey:
        if self._hmac is None:
            self._hmac = HmacKey(self._stored(PSEUDONYM, 1), purpose=PSEUDONYM, version=1)
        return self._hmac

    def recipient_key(self, recipient: str) -> HmacKey:
        """The pseudonym key of one recipient: HKDF of the pseudonym key with the recipient in its label."""
        key = self._recipients.get(recipient)
        if key is None:
            key = self.pseudonym_key().derive(f"citygov/v1/recipient-pseudonym/{recipient}", purpose="recipient")
            self._recipients[recipient] = key
        return key

    def receipt_key(self) -> ReceiptKey:
        if self._receipt is None:
            self._receipt = ReceiptKey(self._stored(RECEIPT_SIGNING, 1), version=1)
        return self._receipt

    def quarantine_key(self) -> SealingKey:
        """The AES-256-GCM key that seals quarantined payloads of feeds that can carry personal data."""
        if self._quarantine is None:
            self._quarantine = SealingKey(self._stored(QUARANTINE, 1), purpose=QUARANTINE, version=1)
        return self._quarantine

    def response_signing_key(self) -> Ed25519PrivateKey:
        """The Ed25519 key that signs data API responses (stored like the receipt key; the API names it by kid)."""
        return Ed25519PrivateKey.from_private_bytes(self._stored(RESPONSE_SIGNING, 1))

    def receipt_public_keys(self) -> dict[str, Ed25519PublicKey]:
        """Every receipt key this keyring can verify with, by ``kid``."""
        key = self.receipt_key()
        return {key.kid: key.public_key}

    def rewrap(self) -> int:
        """Re-wrap stored secrets under the current master key version; returns how many moved."""
        current = self.master.current
        moved = 0
        with self.engine.connect() as conn:
            rows = conn.execute(select(_TABLE).where(_TABLE.c.kek_version != current)).all()
        for row in rows:
            secret = self.master.open(row.kek_version, row.wrapped_key, _aad(row.purpose, row.version, row.kek_version),
                                      label=_WRAP_LABEL)
            _, blob = self.master.seal(secret, _aad(row.purpose, row.version, current), label=_WRAP_LABEL)
            with self.engine.begin() as conn:
                result = conn.execute(
                    update(_TABLE)
                    .where(_TABLE.c.purpose == row.purpose, _TABLE.c.version == row.version,
                           _TABLE.c.kek_version == row.kek_version)
                    .values(kek_version=current, wrapped_key=blob, rewrapped_at=self.clock())
                )
            moved += result.rowcount
        return moved

    def _stored(self, purpose: str, version: int) -> bytes:
        secret = self._load(purpose, version)
        if secret is not None:
            return secret
        kek_version, blob = self.master.seal(
            secrets.token_bytes(32), _aad(purpose, version, self.master.current), label=_WRAP_LABEL
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    _TABLE.insert().values(
                        purpose=purpose, version=version, kek_version=kek_version, wrapped_key=blob,
                        created_at=self.clock(),
                    )
                )
        except IntegrityError:
            pass  # another process created it first: use theirs
        secret = self._load(purpose, version)
        if secret is None:
            raise KeyConfigurationError(f"the {purpose} key could not be created")
        return secret

    def _load(self, purpose: str, version: int) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(_TABLE.c.kek_version, _TABLE.c.wrapped_key).where(
                    _TABLE.c.purpose == purpose, _TABLE.c.version == version
                )
            ).first()
        if row is None:
            return None
        if row.kek_version not in self.master.versions:
            raise KeyConfigurationError(
                f"the {purpose} key is wrapped under master key v{row.kek_version}, which is not configured "
                f"(configured: {list(self.master.versions)}); add it back, or re-wrap before retiring it"
            )
        try:
            return self.master.open(row.kek_version, row.wrapped_key, _aad(purpose, version, row.kek_version),
                                    label=_WRAP_LABEL)
        except DecryptionError:
            raise KeyConfigurationError(
                f"the {purpose} key does not open with master key v{row.kek_version}: this is not the master key "
                "this database was set up with"
            ) from None


def _aad(purpose: str, version: int, kek_version: int) -> bytes:
    return f"citygov/protect-key|{purpose}|{version}|kek-v{kek_version}".encode()
