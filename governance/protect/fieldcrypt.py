"""Field encryption: personal and special-category values sealed with AES-256-GCM under the subject's DEK.

A sealed value is the string ``enc:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`` (no padding), so it sits in
the JSON ``data`` column where the plaintext was. The plaintext is the value's JSON encoding, so numbers,
strings, lists and objects come back as they went in. The associated data binds the value to its place:

    AAD = len-prefixed("citygov/field/v1", entity id, observed time (UTC epoch µs, or ""), field, subject)

with every part as a 4-byte big-endian length and its UTF-8 bytes. A value copied to another row, another
observation time, another field or another subject fails to open, with the one opaque ``DecryptionError``.

The batch API looks each subject's DEK up once per call and keeps no key beyond the call, so an erasure
is effective for the next batch in every process. A caller that has already looked a batch's keys up (the
storage step, for all the groups of one batch at once) hands them in as ``known``.

``protect`` works on a batch in blocks of ``_BLOCK`` entities: pseudonyms and the per-entity part of the
associated data (entity id, observation time) column by column, then one AES-GCM call per value. The stored
form is exactly that of :func:`seal_value`, value by value. Nonces are 12-byte slices of one ``os.urandom``
read per block (what ``secrets.token_bytes`` reads too, minus a system call per value); they live only inside
one ``protect`` call and are never kept across calls, so a process that forks never hands the same nonces
to two children.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import struct
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import attrgetter, floordiv, sub
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
_ONE_MICROSECOND = timedelta(microseconds=1)
_PREFIX_BYTES = PREFIX.encode("ascii")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_LENGTH = struct.Struct(">I")
_BLOCK = 2048
"""Entities sealed per block (one nonce read; bounds the memory a block holds)."""
_NONE = type(None)
_TZINFO = attrgetter("tzinfo")


def _instant(observed_at: datetime | None) -> str:
    if observed_at is None:
        return ""
    if observed_at.tzinfo is None:
        raise ProtectionError("observation times must carry a time zone")
    return str((observed_at - _EPOCH) // _ONE_MICROSECOND)


def field_aad(entity_id: str, observed_at: datetime | None, field_name: str, subject: str) -> bytes:
    """The associated data of one sealed value (see the module docstring)."""
    return _TAG_PART + _part(entity_id) + _part(_instant(observed_at)) + _part(field_name) + _part(subject)


def seal_value(aead: AESGCM, value: Any, aad: bytes) -> str:
    """One value in the stored form: ``enc:v1:`` + base64url (no padding) of nonce ‖ AES-256-GCM(JSON, aad)."""
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


_Ends = dict[str, tuple[Callable[[bytes, bytes, bytes], bytes], list[tuple[str, bytes]]]]
"""Per subject: its key's ``encrypt`` and, per field, the end of the field's associated data (field ‖ subject)."""


def _seal_rows(copies: list[dict[str, Any]], subjects: list[str], times: list[datetime | None],
               fields: list[str], keys: Mapping[str, AESGCM], ends: _Ends | None = None) -> None:
    """Seal ``fields`` of ``copies`` in place (see the module docstring). ``ends``: the subjects' ends of the
    associated data made so far, for the blocks of one call to share (filled in here)."""
    heads = _heads(copies, times)
    parts = [(name, _part(name)) for name in fields]
    dumps, b2a, urlsafe, prefix = orjson.dumps, binascii.b2a_base64, _URLSAFE, _PREFIX_BYTES
    if all(all(map(dict.__contains__, copies, repeat(name))) for name in fields):
        # every entity has every field (the storage step's groups): one exact nonce read, no test per value, and
        # per subject the end of each field's associated data (field ‖ subject) joined once, not once a value
        if ends is None:
            ends = {}
        for subject in set(subjects).difference(ends):
            tail = _part(subject)
            ends[subject] = (keys[subject].encrypt, [(name, part + tail) for name, part in parts])
        nonces, at = os.urandom(NONCE_BYTES * len(copies) * len(parts)), 0
        for copy, head, subject in zip(copies, heads, subjects, strict=True):
            encrypt, suffixes = ends[subject]
            for name, suffix in suffixes:
                nonce = nonces[at : at + NONCE_BYTES]
                at += NONCE_BYTES
                copy[name] = (prefix + b2a(nonce + encrypt(nonce, dumps(copy[name]), head + suffix))
                              .translate(urlsafe, b"=\n")).decode("ascii")
        return
    # nonces for as many values as the first entity has, times the block (exact for the storage step's groups,
    # whose entities all have the same fields); read again if the block has more
    size = NONCE_BYTES * len(copies) * max(1, sum(1 for name, _ in parts if name in copies[0]))
    nonces, at = os.urandom(size), 0
    sealers = {subject: (keys[subject].encrypt, _part(subject)) for subject in set(subjects)}
    for copy, head, subject in zip(copies, heads, subjects, strict=True):
        encrypt, tail = sealers[subject]
        for name, part in parts:
            if name in copy:
                if at == size:
                    nonces, at = os.urandom(size), 0
                nonce = nonces[at : at + NONCE_BYTES]
                at += NONCE_BYTES
                sealed = nonce + encrypt(nonce, dumps(copy[name]), head + part + tail)
                # b2a_base64 ends with a newline and pads with "=": both go, with "+/" made "-_", in one pass
                copy[name] = (prefix + b2a(sealed).translate(urlsafe, b"=\n")).decode("ascii")


def _heads(copies: list[dict[str, Any]], times: list[datetime | None]) -> list[bytes]:
    """Per entity, the start of its values' associated data: tag ‖ entity id ‖ observation time."""
    ids = list(map(dict.get, copies, repeat("id"), repeat("")))
    if not set(map(type, ids)) <= {str} or None in times or None in map(_TZINFO, times):
        return [_TAG_PART + _part(str(copy.get("id", ""))) + _part(_instant(observed))
                for copy, observed in zip(copies, times, strict=True)]
    instants = list(map(str.encode, map(str, map(floordiv, map(sub, times, repeat(_EPOCH)),
                                                 repeat(_ONE_MICROSECOND)))))
    lengths = set(map(len, instants))
    if len(lengths) == 1:
        # one length for all (16 digits from 2001 to 2286): its prefix joins each id's part once, and each head
        # is one concatenation
        size = _LENGTH.pack(lengths.pop())
        starts = {entity_id: _TAG_PART + _part(entity_id) + size for entity_id in set(ids)}
        return list(map(bytes.__add__, map(starts.__getitem__, ids), instants))
    id_parts = {entity_id: _TAG_PART + _part(entity_id) for entity_id in set(ids)}
    instant_parts = map(bytes.__add__, map(_LENGTH.pack, map(len, instants)), instants)
    return list(map(bytes.__add__, map(id_parts.__getitem__, ids), instant_parts))


def observation_time_fields(schemas: Iterable[EntitySchema]) -> frozenset[str]:
    """The observation-time properties of ``schemas``: the fields ``reveal`` may find plain or sealed
    (``clear_ok``), since rows written before they were left in the clear keep them sealed."""
    return frozenset(schema.observed_at for schema in schemas if schema.observed_at)


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
        every other personal or special-category property is encrypted — except the observation-time
        property (``schema.observed_at``), which stays in the clear.
        """
        subject = schema.subject_property
        if subject is None:
            return None
        personal = {
            name for name, level in schema.classification.items()
            if level.rank >= Classification.PERSONAL.rank and name not in _NEVER_PROTECTED
        }
        linked = {name for name in personal if name == "id" or name in schema.relationships} - {subject}
        # The observation time is not sealed: every row stores it in the clear anyway, in its ``observed_at``
        # column (the retention deadline and time-window queries need it), and every sealed value's associated
        # data binds it, so a sealed copy inside ``data`` would hide nothing and cost an AES-GCM call a record.
        # Rows written before keep it sealed; ``reveal`` opens those and passes plain ones (``clear_ok``).
        clear = {schema.observed_at} if schema.observed_at else set()
        return cls(subject_property=subject, encrypt=frozenset(personal - linked - {subject} - clear),
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
        known: Mapping[str, AESGCM] | None = None,
        copy: bool = True,
    ) -> list[dict[str, Any]]:
        """New dicts with identifiers pseudonymized and ``plan.encrypt`` fields sealed (inputs untouched).

        ``observed_at[i]`` is entity ``i``'s observation time as the store records it (its ``observed_at``
        column); it goes into the associated data, so it must be given again, equal, to ``reveal``.
        ``known``: data keys of (some of) the subjects, by pseudonym, that the caller looked up for this batch
        (``SubjectKeys.lookup``); the others are looked up, or created, in one query.
        ``copy=False``: a caller that owns ``entities`` and replaces them with the result anyway (the storage
        step) saves a copy of every dict: the well-formed batch is then changed in place and returned, and may
        be left pseudonymized (never half-sealed by an error of this call's checks) if an error is raised.
        Raises ``InvalidRecordError`` for an entity without a subject, ``SubjectErasedError`` if a subject
        was erased — in both cases nothing of the batch is returned.
        """
        if len(observed_at) != len(entities):
            raise ProtectionError("observed_at must give one time per entity")
        out = self._pseudonymized(entities, plan, fresh=copy)
        subjects: list[str] = list(map(dict.__getitem__, out, repeat(plan.subject_property)))
        distinct = set(subjects)
        keys: Mapping[str, AESGCM]
        if known is None:
            keys = self.subject_keys.data_keys(distinct, create=True)
        else:
            missing = {s for s in distinct if s not in known}
            keys = {**known, **self.subject_keys.data_keys(missing, create=True)} if missing else known
        fields = sorted(plan.encrypt)
        if fields:
            times = list(observed_at)
            ends: _Ends = {}
            for start in range(0, len(out), _BLOCK):
                end = start + _BLOCK
                _seal_rows(out[start:end], subjects[start:end], times[start:end], fields, keys, ends)
        return out

    def _pseudonymized(self, entities: Sequence[Mapping[str, Any]], plan: ProtectionPlan, *,
                       fresh: bool = True) -> list[dict[str, Any]]:
        """Copies of ``entities`` (or, ``fresh=False``, the dicts themselves) with the subject and
        ``plan.pseudonymize`` fields as pseudonyms.

        Column by column when every subject is a non-empty string and every identifier a string (or absent);
        otherwise entity by entity, on copies, which raises for the first entity in order that is not, as it
        always did.
        """
        copies: list[dict[str, Any]]
        if fresh or set(map(type, entities)) != {dict}:
            copies = list(map(dict, entities))
        else:
            copies = list(entities)  # type: ignore[arg-type]  # exactly dicts, checked above
        subject_property = plan.subject_property
        remembered = self.pseudonyms.remembered
        columns: list[tuple[str, list[Any], list[str] | None]] = []
        for name in sorted(plan.pseudonym_fields):
            values = list(map(dict.get, copies, repeat(name)))
            found = remembered(values)  # all known identifiers (so all non-empty strings): no check needed
            if found is None:
                if name == subject_property:
                    well_formed = set(map(type, values)) <= {str} and "" not in values
                else:
                    well_formed = set(map(type, values)) <= {str, _NONE}
                if not well_formed:
                    return self._pseudonymized_one_by_one(copies if fresh else list(map(dict, entities)), plan)
            columns.append((name, values, found))
        of = self.pseudonyms.of
        for name, values, found in columns:
            if found is not None or None not in values:
                names_in_order = found if found is not None else self.pseudonyms.column(values)
                deque(map(dict.__setitem__, copies, repeat(name), names_in_order), maxlen=0)
            else:
                names = {value: of(value) for value in set(values) if value is not None}
                for row, value in zip(copies, values, strict=True):
                    if value is not None:
                        row[name] = names[value]
        return copies

    def _pseudonymized_one_by_one(self, copies: list[dict[str, Any]], plan: ProtectionPlan) -> list[dict[str, Any]]:
        names: dict[str, str] = {}
        for index, copy in enumerate(copies):
            subject = copy.get(plan.subject_property)
            if not isinstance(subject, str) or not subject:
                raise InvalidRecordError(
                    "missing_subject", f"entity {index} has no {plan.subject_property} to key its protection by",
                    field=plan.subject_property,
                )
            for name in plan.pseudonym_fields:
                value = copy.get(name)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise InvalidRecordError("not_an_identifier", f"{name} must be a string to pseudonymize",
                                             field=name)
                found = names.get(value)
                if found is None:
                    found = names[value] = self.pseudonyms.of(value)
                copy[name] = found
        return copies

    def reveal(
        self,
        entities: Sequence[Mapping[str, Any]],
        *,
        fields: Collection[str],
        subject_property: str,
        observed_at: Sequence[datetime | None],
        clear_ok: Collection[str] = (),
    ) -> list[dict[str, Any]]:
        """New dicts with ``fields`` decrypted; other sealed fields stay sealed.

        Any value that does not open — tampered, moved, or its subject erased — raises the one opaque
        ``DecryptionError`` for the whole call: a reader never gets a silently partial answer. A plain value
        where a sealed one is expected does not open either, except in a field of ``clear_ok``: the schema's
        observation-time property (``observation_time_fields``), sealed by rows written before it was left in the
        clear and plain since, is opened when sealed and passed through when plain.
        """
        if len(observed_at) != len(entities):
            raise ProtectionError("observed_at must give one time per entity")
        wanted = [name for name in fields if name not in (subject_property, "id")]
        if clear_ok:
            def sealed_in(entity: Mapping[str, Any]) -> list[str]:
                # a plain observation time passes through (see ProtectionPlan.from_schema): nothing to open
                return [name for name in wanted
                        if name in entity and (name not in clear_ok or is_sealed(entity[name]))]
        else:
            def sealed_in(entity: Mapping[str, Any]) -> list[str]:
                return [name for name in wanted if name in entity]
        subjects = {e.get(subject_property) for e in entities if sealed_in(e)}
        if not all(is_pseudonym(s) for s in subjects):
            raise DecryptionError
        keys = self.subject_keys.data_keys({str(s) for s in subjects}, create=False)
        out: list[dict[str, Any]] = []
        for entity, observed in zip(entities, observed_at, strict=True):
            copy = dict(entity)
            present = sealed_in(copy)
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
