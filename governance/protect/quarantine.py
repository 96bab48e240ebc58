"""Sealed quarantine: raw payloads of feeds that can carry personal data are encrypted at rest.

A feed "can carry personal data" when its adapter produces a type with a data subject (care hubs). Its
rejected payloads are kept — they must stay retryable once the cause is fixed — but sealed with
AES-256-GCM under the keyring's quarantine key, bound to the message fingerprint, and they expire after
``CITYGOV_QUARANTINE_RETENTION_DAYS`` (the retention sweep deletes them).

Format: ``CGQ1`` ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16), AAD ``citygov/quarantine/v1|<fingerprint>``.
Whoever can run the pipeline (holds the master key) can open them for a retry or ``quarantine show
--reveal``; a database copy alone cannot.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from cryptography.exceptions import InvalidTag

from adapters.base import Adapter
from governance.catalog import SchemaCatalog
from governance.protect.errors import DecryptionError
from governance.protect.keyring import Keyring

MAGIC = b"CGQ1"
_NONCE = 12


def _aad(fingerprint: str) -> bytes:
    return b"citygov/quarantine/v1|" + fingerprint.encode("ascii", "replace")


class QuarantineVault:
    """Seals and opens quarantined payloads of personal-data feeds."""

    def __init__(self, keyring: Keyring, catalog: SchemaCatalog, *, retention_days: int) -> None:
        self.keyring = keyring
        self.catalog = catalog
        self.retention = timedelta(days=retention_days)
        self._personal: dict[str, bool] = {}

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the adapter's feed can carry personal data (one of its types has a data subject)."""
        found = self._personal.get(adapter.name)
        if found is None:
            types = self.catalog.types()
            found = any(t in types and self.catalog.get(t).subject_property is not None
                        for t in adapter.target_types)
            self._personal[adapter.name] = found
        return found

    def seal(self, payload: bytes, fingerprint: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return MAGIC + nonce + self.keyring.quarantine_key().encrypt(nonce, payload, _aad(fingerprint))

    def open(self, blob: bytes, fingerprint: str) -> bytes:
        if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + 16:
            raise DecryptionError
        body = blob[len(MAGIC):]
        try:
            return self.keyring.quarantine_key().decrypt(body[:_NONCE], body[_NONCE:], _aad(fingerprint))
        except InvalidTag:
            raise DecryptionError from None
