"""Sealed quarantine: raw payloads of feeds that can carry personal data are encrypted at rest.

A feed "can carry personal data" when its adapter produces a type with a data subject (care hubs). Its
rejected payloads are kept — they must stay retryable once the cause is fixed — but sealed, with the MQTT
topic (which names the hub) inside the seal, and they expire after ``CITYGOV_QUARANTINE_RETENTION_DAYS``
(the retention sweep deletes them).

- When the adapter can read the subject from the payload (``Adapter.subject_hint``, also for a payload that
  fails to parse), it is sealed under **the subject's own data key** and the row's ``subject`` column holds
  the subject's pseudonym: erasing the subject (crypto-shredding) makes it unreadable in every copy of the
  database, like their stored entities. ``CGQ2`` ‖ nonce (12) ‖ ciphertext ‖ tag (16), AAD
  ``citygov/quarantine/v2|<fingerprint>|<subject pseudonym>``.
- Otherwise it is sealed under the keyring's quarantine key: ``CGQ1`` ‖ nonce ‖ ciphertext ‖ tag, AAD
  ``citygov/quarantine/v1|<fingerprint>``. Erasure finds such rows by opening them and deletes them.

The sealed plaintext is the topic (4-byte big-endian length, UTF-8; length 0xFFFFFFFF for none) followed
by the payload bytes. A subject that was already erased gets nothing kept: the payload is discarded.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag

from adapters.base import Adapter
from governance.catalog import SchemaCatalog
from governance.ingest.message import RawMessage
from governance.protect.errors import DecryptionError, SubjectErasedError
from governance.protect.fieldcrypt import FieldProtector
from governance.protect.keyring import Keyring

SHARED = b"CGQ1"
SUBJECT = b"CGQ2"
_NONCE = 12
_NO_TOPIC = 0xFFFFFFFF


@dataclass(frozen=True)
class SealedPayload:
    blob: bytes
    subject: str | None
    """The subject's pseudonym when sealed under their key."""


def _aad(fingerprint: str, subject: str | None) -> bytes:
    fp = fingerprint.encode("ascii", "replace")
    if subject is None:
        return b"citygov/quarantine/v1|" + fp
    return b"citygov/quarantine/v2|" + fp + b"|" + subject.encode("ascii")


def _envelope(topic: str | None, payload: bytes) -> bytes:
    if topic is None:
        return struct.pack(">I", _NO_TOPIC) + payload
    raw = topic.encode("utf-8")
    return struct.pack(">I", len(raw)) + raw + payload


def _unwrap(plain: bytes) -> tuple[str | None, bytes]:
    (size,) = struct.unpack(">I", plain[:4])
    if size == _NO_TOPIC:
        return None, plain[4:]
    return plain[4 : 4 + size].decode("utf-8"), plain[4 + size :]


class QuarantineVault:
    """Seals and opens quarantined payloads of personal-data feeds."""

    def __init__(self, keyring: Keyring, catalog: SchemaCatalog, *, retention_days: int,
                 protector: FieldProtector | None = None) -> None:
        self.keyring = keyring
        self.catalog = catalog
        self.retention = timedelta(days=retention_days)
        self.protector = protector
        self._personal: dict[str, bool] = {}
        self._prepared: dict[str, Any] = {}

    def applies_to(self, adapter: Adapter) -> bool:
        """Whether the adapter's feed can carry personal data (one of its types has a data subject)."""
        found = self._personal.get(adapter.name)
        if found is None:
            types = self.catalog.types()
            found = any(t in types and self.catalog.get(t).subject_property is not None
                        for t in adapter.target_types)
            self._personal[adapter.name] = found
        return found

    def prepare(self, subject_ids: set[str]) -> None:
        """Fetch (or create) the data keys of a batch's quarantined subjects in one go, for the seals that follow.

        If one of them was erased, nothing is prepared and each seal looks its own key up (and refuses that one).
        """
        self._prepared = {}
        if not subject_ids or self.protector is None:
            return
        refs = {self.protector.pseudonyms.subject_ref(s) for s in subject_ids}
        try:
            self._prepared = dict(self.protector.subject_keys.data_keys(refs, create=True))
        except SubjectErasedError:
            self._prepared = {}

    def seal(self, payload: bytes, fingerprint: str, *, topic: str | None = None,
             subject_id: str | None = None) -> SealedPayload:
        """Seal under the subject's key when ``subject_id`` is given (raises ``SubjectErasedError`` if they
        were erased: keep nothing then), else under the shared quarantine key."""
        nonce = secrets.token_bytes(_NONCE)
        plain = _envelope(topic, payload)
        if subject_id is not None and self.protector is not None:
            subject = self.protector.pseudonyms.subject_ref(subject_id)
            aead = self._prepared.get(subject) or self.protector.subject_keys.data_keys({subject}, create=True)[subject]
            return SealedPayload(SUBJECT + nonce + aead.encrypt(nonce, plain, _aad(fingerprint, subject)), subject)
        key = self.keyring.quarantine_key()
        return SealedPayload(SHARED + nonce + key.encrypt(nonce, plain, _aad(fingerprint, None)), None)

    def open_sealed(self, blob: bytes, fingerprint: str, subject: str | None = None) -> tuple[str | None, bytes]:
        """(topic, payload) of a sealed blob; one opaque ``DecryptionError`` for anything that does not open."""
        if len(blob) < 4 + _NONCE + 16:
            raise DecryptionError
        magic, nonce, body = blob[:4], blob[4 : 4 + _NONCE], blob[4 + _NONCE :]
        try:
            if magic == SHARED:
                plain = self.keyring.quarantine_key().decrypt(nonce, body, _aad(fingerprint, None))
            elif magic == SUBJECT and subject is not None and self.protector is not None:
                aead = self.protector.subject_keys.data_keys({subject}, create=False).get(subject)
                if aead is None:
                    raise DecryptionError
                plain = aead.decrypt(nonce, body, _aad(fingerprint, subject))
            else:
                raise DecryptionError
            return _unwrap(plain)
        except (InvalidTag, struct.error, UnicodeDecodeError):
            raise DecryptionError from None

    def open(self, blob: bytes, fingerprint: str, subject: str | None = None) -> bytes:
        """The payload of a sealed blob."""
        return self.open_sealed(blob, fingerprint, subject)[1]

    def open_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A quarantine row with its payload and topic opened (rows that are not sealed come back as they are)."""
        if not row.get("sealed"):
            return row
        topic, payload = self.open_sealed(bytes(row["payload"]), row["fingerprint"], row.get("subject"))
        return {**row, "payload": payload, "topic": topic}


def redacted_source(message: RawMessage) -> str:
    """The message's source with its topic taken out (the topic is sealed with the payload)."""
    if message.topic and message.topic in message.source:
        return message.source.replace(message.topic, "<sealed topic>")
    return message.source
