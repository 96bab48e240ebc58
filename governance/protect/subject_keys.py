"""Per-subject data keys (DEKs): created on first write, wrapped in ``subject_key``, destroyed at erasure.

A DEK is wrapped with AES-256-GCM under HKDF(master key version ‖ the subject's keystore secret), with
the subject's pseudonym and the master key version as associated data. Unwrapping needs three things
held in three places: the row (database), the master key (environment or key file) and the secret
(keystore folder). Erasure destroys the secret first — from then on no copy of the database, however
old, opens — and then empties the row, leaving a tombstone that records when.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, String, any_, bindparam, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from governance.protect.errors import DecryptionError, ProtectionError, SubjectErasedError
from governance.protect.keyring import Clock, utc_now
from governance.protect.keystore import SubjectKeystore
from governance.protect.masterkey import MasterKeys
from governance.protect.pseudonym import is_pseudonym
from governance.protect.tables import SubjectKey
from governance.sharing.reader import reading

_LABEL = "citygov/v1/subject-key-wrap"
_TABLE = SubjectKey.__table__  # type: ignore[attr-defined]
_CHUNK = 500
_ARRAY_CHUNK = 10_000
#: What a lookup needs of a row: no dates (on SQLite each is parsed from text in Python), only whether it is a
#: tombstone.
_LOOKUP_COLUMNS = (_TABLE.c.subject, _TABLE.c.key_version, _TABLE.c.wrapped_key,
                   _TABLE.c.destroyed_at.is_not(None).label("destroyed"))


@dataclass(frozen=True)
class ShredResult:
    """What an erasure did: the subject's key was live before (or not), and is destroyed as of ``destroyed_at``."""

    subject: str
    destroyed_at: datetime
    had_key: bool
    had_secret: bool

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "destroyed_at": self.destroyed_at.isoformat(), "had_key": self.had_key,
                "had_secret": self.had_secret}


@dataclass
class RewrapReport:
    """Subject keys moved to the current master key version; ``unusable`` lists pseudonyms that could not be."""

    version: int
    rewrapped: int = 0
    unusable: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "rewrapped": self.rewrapped, "unusable": list(self.unusable)}


@dataclass
class KeyLookup:
    """The ``subject_key`` rows of some subjects, as read at one moment (no key is created by reading)."""

    keys: dict[str, AESGCM] = field(default_factory=dict)
    """Usable data keys, by pseudonym."""
    erased: set[str] = field(default_factory=set)
    """Subjects whose row is a tombstone: nothing may be written for them."""
    unusable: set[str] = field(default_factory=set)
    """Subjects with a key row that does not open (keystore secret missing, wrong master key)."""
    missing: set[str] = field(default_factory=set)
    """Subjects without any row yet: a writer creates their key."""

    def __repr__(self) -> str:  # never the keys themselves
        return (f"KeyLookup(keys={len(self.keys)}, erased={len(self.erased)}, unusable={len(self.unusable)}, "
                f"missing={len(self.missing)})")


class SubjectKeys:
    """The DEK of each subject, by pseudonym."""

    #: Unwrapped DEKs kept per process, keyed by the exact ``subject_key`` row they came from. Every call still
    #: reads the rows and checks that the subject's keystore secret exists, so an erasure (secret destroyed, row
    #: turned into a tombstone) takes effect at the next call in every process, even against a restored row;
    #: the cache only saves reading the secret and the unwrap.
    CACHE_SIZE = 20_000

    def __init__(self, engine: Engine, master: MasterKeys, keystore: SubjectKeystore, *, clock: Clock = utc_now):
        self.engine = engine
        self.master = master
        self.keystore = keystore
        self.clock = clock
        self._unwrapped: dict[tuple[str, int, bytes], AESGCM] = {}

    def data_keys(self, subjects: Collection[str], *, create: bool) -> dict[str, AESGCM]:
        """The DEKs of ``subjects`` in one query per 500 subjects.

        ``create=True`` (writing): missing keys are created; an erased subject raises
        ``SubjectErasedError`` and an unusable key ``ProtectionError`` — nothing is written then.
        ``create=False`` (reading): subjects without a usable key are simply absent from the result.
        """
        found = self.lookup(subjects)
        if create:
            if found.erased:
                raise SubjectErasedError("the subject was erased: no data is written for it any more")
            if found.unusable:
                raise ProtectionError(
                    "a subject's data key cannot be unwrapped (its keystore secret is missing or the master "
                    "key is wrong); nothing was written"
                )
            for subject in sorted(found.missing):
                found.keys[subject] = self._create(subject)
        return found.keys

    def lookup(self, subjects: Collection[str]) -> KeyLookup:
        """What ``subject_key`` holds for ``subjects`` (pseudonyms), read once (one query per 500), nothing created.

        For a writer that handles several groups of one batch: erased subjects are told apart from live ones
        without raising, and the usable keys can be handed to ``FieldProtector.protect(..., known=...)``.
        """
        wanted = set(subjects)
        for subject in wanted:
            if not is_pseudonym(subject):
                raise ProtectionError("data keys are looked up by pseudonym (psn:v1:...)")
        found = KeyLookup()
        seen: set[str] = set()
        for row in self._rows(sorted(wanted), _LOOKUP_COLUMNS):
            seen.add(row.subject)
            if row.destroyed or row.wrapped_key is None:
                found.erased.add(row.subject)
                continue
            cache_key = (row.subject, row.key_version, bytes(row.wrapped_key))
            aead = self._unwrapped.get(cache_key)
            if aead is not None and not self.keystore.exists(row.subject):
                aead = None  # the secret was destroyed (an erasure elsewhere): the key is gone for everyone
                self._unwrapped.pop(cache_key, None)
            if aead is None:
                aead = self._unwrap(row.subject, row.key_version, row.wrapped_key)
                if aead is not None:
                    if len(self._unwrapped) >= self.CACHE_SIZE:
                        self._unwrapped.clear()
                    self._unwrapped[cache_key] = aead
            if aead is None:
                found.unusable.add(row.subject)
                continue
            found.keys[row.subject] = aead
        found.missing = wanted - seen
        return found

    def shred(self, subject: str, *, at: datetime | None = None) -> ShredResult:
        """Crypto-shred ``subject``: destroy the keystore secret, then empty the row (a tombstone stays).

        Idempotent; a subject that never had a key gets a tombstone, so nothing is written for it later.
        """
        if not is_pseudonym(subject):
            raise ProtectionError("subjects are erased by pseudonym (psn:v1:...)")
        at = at or self.clock()
        self._unwrapped = {k: v for k, v in self._unwrapped.items() if k[0] != subject}
        had_secret = self.keystore.destroy(subject)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(_TABLE)
                .where(_TABLE.c.subject == subject, _TABLE.c.destroyed_at.is_(None))
                .values(wrapped_key=None, destroyed_at=at)
            )
            had_key = result.rowcount > 0
        if not had_key:
            try:
                with self.engine.begin() as conn:
                    conn.execute(_TABLE.insert().values(subject=subject, key_version=self.master.current,
                                                        wrapped_key=None, created_at=at, destroyed_at=at))
            except IntegrityError:
                pass  # already a tombstone
        return ShredResult(subject=subject, destroyed_at=at, had_key=had_key, had_secret=had_secret)

    def erased(self, subjects: Collection[str]) -> set[str]:
        """Which of ``subjects`` (pseudonyms) were erased: their key row is a tombstone."""
        return {row.subject for row in self._rows(sorted(set(subjects)))
                if row.destroyed_at is not None or row.wrapped_key is None}

    def status(self, subject: str) -> dict[str, Any] | None:
        """What may be shown about a subject's key: version and dates, never bytes."""
        rows = list(self._rows([subject]))
        if not rows:
            return None
        row = rows[0]
        return {"subject": row.subject, "key_version": row.key_version, "created_at": row.created_at,
                "rewrapped_at": row.rewrapped_at, "destroyed_at": row.destroyed_at}

    def rewrap(self) -> RewrapReport:
        """Move every live DEK to the current master key version (the DEK itself, and the data, stay)."""
        current = self.master.current
        report = RewrapReport(version=current)
        last = ""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(_TABLE)
                    .where(_TABLE.c.destroyed_at.is_(None), _TABLE.c.key_version != current, _TABLE.c.subject > last)
                    .order_by(_TABLE.c.subject)
                    .limit(_CHUNK)
                ).all()
            if not rows:
                return report
            for row in rows:
                last = row.subject
                secret = self.keystore.get(row.subject)
                try:
                    if secret is None:
                        raise DecryptionError
                    dek = self.master.open(row.key_version, row.wrapped_key, _aad(row.subject, row.key_version),
                                           label=_LABEL, secret=secret)
                except DecryptionError:
                    report.unusable.append(row.subject)
                    continue
                _, blob = self.master.seal(dek, _aad(row.subject, current), label=_LABEL, secret=secret)
                with self.engine.begin() as conn:
                    result = conn.execute(
                        update(_TABLE)
                        .where(_TABLE.c.subject == row.subject, _TABLE.c.key_version == row.key_version,
                               _TABLE.c.destroyed_at.is_(None))
                        .values(key_version=current, wrapped_key=blob, rewrapped_at=self.clock())
                    )
                report.rewrapped += result.rowcount

    def _rows(self, subjects: list[str], columns: Sequence[Any] = (_TABLE,)) -> Iterator[Any]:
        """The rows of ``subjects``, one single-statement read per chunk through :func:`reading`: inside a request's
        :func:`~governance.sharing.reader.sharing_reads` block they use its connection (a request never waits for
        a second pooled connection while it holds one); each chunk's rows are fetched before they are yielded."""
        if self.engine.dialect.name == "postgresql":
            # one text-array parameter: an IN list of 500 placeholders costs PostgreSQL ~10 µs a value to bind
            # and plan (as for the ingest ledger's lookups)
            query = select(*columns).where(_TABLE.c.subject == any_(bindparam("subjects", type_=ARRAY(String))))
            for start in range(0, len(subjects), _ARRAY_CHUNK):
                with reading(self.engine) as conn:
                    rows = conn.execute(query, {"subjects": subjects[start : start + _ARRAY_CHUNK]}).all()
                yield from rows
            return
        for start in range(0, len(subjects), _CHUNK):
            chunk = subjects[start : start + _CHUNK]
            with reading(self.engine) as conn:
                rows = conn.execute(select(*columns).where(_TABLE.c.subject.in_(chunk))).all()
            yield from rows

    def _unwrap(self, subject: str, version: int, blob: bytes) -> AESGCM | None:
        secret = self.keystore.get(subject)
        if secret is None:
            return None
        try:
            return AESGCM(self.master.open(version, blob, _aad(subject, version), label=_LABEL, secret=secret))
        except DecryptionError:
            return None

    def _create(self, subject: str) -> AESGCM:
        secret = self.keystore.get_or_create(subject)
        dek = AESGCM.generate_key(bit_length=256)
        version, blob = self.master.seal(dek, _aad(subject, self.master.current), label=_LABEL, secret=secret)
        try:
            with self.engine.begin() as conn:
                conn.execute(_TABLE.insert().values(subject=subject, key_version=version, wrapped_key=blob,
                                                    created_at=self.clock()))
        except IntegrityError:
            # another writer won the race (or erased the subject meanwhile): use what is there now
            return self.data_keys([subject], create=True)[subject]
        return AESGCM(dek)


def _aad(subject: str, kek_version: int) -> bytes:
    return f"citygov/subject-key|{subject}|kek-v{kek_version}".encode("ascii")
