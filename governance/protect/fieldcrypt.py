"""Field encryption: personal and special-category values sealed with AES-256-GCM under the subject's DEK.

A sealed value is the string ``enc:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`` (no padding), so it sits in
the JSON ``data`` column where the plaintext was. The plaintext is the value's JSON encoding, so numbers,
strings, lists and objects come back as they went in. The associated data binds the value to its place:

    AAD = len-prefixed("citygov/field/v1", entity id, observed time (UTC epoch µs, or ""), field, subject)

with every part as a 4-byte big-endian length and its UTF-8 bytes. A value copied to another row, another
observation time, another field or another subject fails to open, with the one opaque ``DecryptionError``.

The batch API looks each subject's DEK up once per call and keeps no key beyond the call, so an erasure
is effective for the next batch in every process.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine

from governance.catalog import Classification, EntitySchema
from governance.config import Settings
from governance.errors import InvalidRecordError
from governance.protect.errors import DecryptionError, ProtectionError
from governance.protect.keyring import Clock, Keyring, utc_now
from governance.protect.keystore import SubjectKeystore
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from governance.protect.subject_keys import ShredResult, SubjectKeys

PREFIX = "enc:v1:"
NONCE_BYTES = 12
_AAD_TAG = "citygov/field/v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER_PROTECTED = frozenset({"type"})


def _part(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data


_TAG_PART = _part(_AAD_TAG)


def _instant(observed_at: datetime | None) -> str:
    if observed_at is None:
        return ""
    if observed_at.tzinfo is None:
        raise ProtectionError("observation times must carry a time zone")
    return str((observed_at - _EPOCH) // timedelta(microseconds=1))


def field_aad(entity_id: str, observed_at: datetime | None, field_name: str, subject: str) -> bytes:
    """The associated data of one sealed value (see the module docstring)."""
    return _TAG_PART + _part(entity_id) + _part(_instant(observed_at)) + _part(field_name) + _part(subject)


def seal_value(aead: AESGCM, value: Any, aad: bytes) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = aead.encrypt(nonce, orjson.dumps(value), aad)
    return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")


def open_value(aead: AESGCM, token: object, aad: bytes) -> Any:
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise DecryptionError
    body = token[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError from None
    if len(raw) < NONCE_BYTES + 16:
        raise DecryptionError
    try:
        return orjson.loads(aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad))
    except (InvalidTag, orjson.JSONDecodeError):
        raise DecryptionError from None


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


@dataclass(frozen=True)
class ProtectionPlan:
    """What to do with one entity type at write: which fields become pseudonyms, which are encrypted."""

    subject_property: str
    encrypt: frozenset[str]
    pseudonymize: frozenset[str] = field(default_factory=frozenset)
    """Identifiers tied to the person besides the subject (a hub's id, the entity id itself)."""

    def __post_init__(self) -> None:
        if self.subject_property in self.encrypt or "id" in self.encrypt:
            raise ProtectionError("the subject property and the entity id are pseudonymized, never encrypted")
        if self.encrypt & self.pseudonymize:
            both = sorted(self.encrypt & self.pseudonymize)
            raise ProtectionError(f"fields both encrypted and pseudonymized: {both}")
        if (self.encrypt | self.pseudonymize) & _NEVER_PROTECTED:
            raise ProtectionError("the entity type is never protected")

    @property
    def pseudonym_fields(self) -> frozenset[str]:
        return self.pseudonymize | {self.subject_property}

    @classmethod
    def from_schema(cls, schema: EntitySchema) -> ProtectionPlan | None:
        """The plan for a standard schema: None if the type has no data subject.

        The subject, a personal entity id and personal relationships (``refDevice``…) become pseudonyms;
        every other personal or special-category property is encrypted.
        """
        subject = schema.subject_property
        if subject is None:
            return None
        personal = {
            name for name, level in schema.classification.items()
            if level.rank >= Classification.PERSONAL.rank and name not in _NEVER_PROTECTED
        }
        linked = {name for name in personal if name == "id" or name in schema.relationships} - {subject}
        return cls(subject_property=subject, encrypt=frozenset(personal - linked - {subject}),
                   pseudonymize=frozenset(linked))


class FieldProtector:
    """Protect entities at write, reveal chosen fields at read, erase a subject."""

    def __init__(self, pseudonyms: Pseudonyms, subject_keys: SubjectKeys) -> None:
        self.pseudonyms = pseudonyms
        self.subject_keys = subject_keys

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, *, keyring: Keyring | None = None, clock: Clock = utc_now
    ) -> FieldProtector:
        keyring = keyring or Keyring.from_settings(settings, engine, clock=clock)
        keys = SubjectKeys(engine, keyring.master, SubjectKeystore.from_settings(settings), clock=clock)
        return cls(Pseudonyms(keyring), keys)

    def protect(
        self,
        entities: Sequence[Mapping[str, Any]],
        plan: ProtectionPlan,
        *,
        observed_at: Sequence[datetime | None],
    ) -> list[dict[str, Any]]:
        """New dicts with identifiers pseudonymized and ``plan.encrypt`` fields sealed (inputs untouched).

        ``observed_at[i]`` is entity ``i``'s observation time as the store records it (its ``observed_at``
        column); it goes into the associated data, so it must be given again, equal, to ``reveal``.
        Raises ``InvalidRecordError`` for an entity without a subject, ``SubjectErasedError`` if a subject
        was erased — in both cases nothing of the batch is returned.
        """
        if len(observed_at) != len(entities):
            raise ProtectionError("observed_at must give one time per entity")
        names: dict[str, str] = {}

        def pseudonym(value: str) -> str:
            found = names.get(value)
            if found is None:
                found = names[value] = self.pseudonyms.of(value)
            return found

        out: list[dict[str, Any]] = []
        for index, entity in enumerate(entities):
            subject = entity.get(plan.subject_property)
            if not isinstance(subject, str) or not subject:
                raise InvalidRecordError(
                    "missing_subject", f"entity {index} has no {plan.subject_property} to key its protection by",
                    field=plan.subject_property,
                )
            copy = dict(entity)
            for name in plan.pseudonym_fields:
                value = copy.get(name)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise InvalidRecordError("not_an_identifier", f"{name} must be a string to pseudonymize",
                                             field=name)
                copy[name] = pseudonym(value)
            out.append(copy)
        keys = self.subject_keys.data_keys({e[plan.subject_property] for e in out}, create=True)
        field_parts = {name: _part(name) for name in plan.encrypt}
        for copy, observed in zip(out, observed_at, strict=True):
            subject = copy[plan.subject_property]
            aead = keys[subject]
            head = _TAG_PART + _part(str(copy.get("id", ""))) + _part(_instant(observed))
            tail = _part(subject)
            for name, part in field_parts.items():
                if name in copy:
                    copy[name] = seal_value(aead, copy[name], head + part + tail)
        return out

    def reveal(
        self,
        entities: Sequence[Mapping[str, Any]],
        *,
        fields: Collection[str],
        subject_property: str,
        observed_at: Sequence[datetime | None],
    ) -> list[dict[str, Any]]:
        """New dicts with ``fields`` decrypted; other sealed fields stay sealed.

        Any value that does not open — tampered, moved, or its subject erased — raises the one opaque
        ``DecryptionError`` for the whole call: a reader never gets a silently partial answer.
        """
        if len(observed_at) != len(entities):
            raise ProtectionError("observed_at must give one time per entity")
        wanted = [name for name in fields if name not in (subject_property, "id")]
        subjects = {
            e.get(subject_property) for e in entities if any(name in e for name in wanted)
        }
        if not all(is_pseudonym(s) for s in subjects):
            raise DecryptionError
        keys = self.subject_keys.data_keys({str(s) for s in subjects}, create=False)
        out: list[dict[str, Any]] = []
        for entity, observed in zip(entities, observed_at, strict=True):
            copy = dict(entity)
            present = [name for name in wanted if name in copy]
            if present:
                aead = keys.get(str(copy.get(subject_property)))
                if aead is None:
                    raise DecryptionError
                entity_id = str(copy.get("id", ""))
                subject = str(copy[subject_property])
                for name in present:
                    copy[name] = open_value(aead, copy[name], field_aad(entity_id, observed, name, subject))
            out.append(copy)
        return out

    def shred(self, subject: str, *, at: datetime | None = None) -> ShredResult:
        """Erase a subject (real id or pseudonym) by destroying its data key."""
        return self.subject_keys.shred(self.pseudonyms.subject_ref(subject), at=at)
