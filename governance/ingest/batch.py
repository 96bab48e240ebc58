"""A batch of records moving through the pipeline, and the report of what became of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from governance.errors import InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record left the pipeline: the step, a reason category and a sentence to act on."""

    step: str
    reason: str
    detail: str
    field: str | None = None
    discard_payload: bool = False
    """The payload must not be kept (personal data refused for want of a legal basis): quarantine
    holds only its size and hash, and the ledger forgets it so a resend is judged afresh."""

    @classmethod
    def from_error(cls, step: str, error: InvalidRecordError) -> Rejection:
        return cls(step=step, reason=error.reason, detail=error.detail, field=error.field)


class Stored(NamedTuple):
    """How one entity is written, as the storage step decided: the store's columns beside ``data``.

    A named tuple: the storage step makes one per entity of a batch, in C (``tuple.__new__`` over ``zip``)."""

    observed_at: datetime | None
    subject: str | None = None
    """The subject's pseudonym, for types that have a data subject."""
    retain_until: datetime | None = None
    policy_revision: str | None = None


@dataclass(slots=True)
class Record:
    """One input message and what the pipeline made of it so far."""

    message: RawMessage
    fingerprint: str
    entities: list[ParsedEntity] = field(default_factory=list)
    rejection: Rejection | None = None
    duplicate: bool = False
    retry_of: int | None = None
    """Quarantine row this record is a retry of, if any."""
    stored: list[Stored] | None = None
    """Set by the storage step: one entry per entity, in order."""

    @property
    def active(self) -> bool:
        return self.rejection is None and not self.duplicate

    def reject(self, rejection: Rejection) -> None:
        if self.rejection is None:
            self.rejection = rejection
            self.entities = []
            self.stored = None


@dataclass(slots=True)
class Batch:
    records: list[Record]

    def active(self) -> list[Record]:
        return [r for r in self.records if r.active]


@dataclass
class IngestReport:
    """Counts for a run. Invariant: ``read == accepted + quarantined + duplicates``."""

    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    entities: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)

    def add(self, other: IngestReport) -> None:
        self.read += other.read
        self.accepted += other.accepted
        self.quarantined += other.quarantined
        self.duplicates += other.duplicates
        self.entities += other.entities
        self.by_reason.update(other.by_reason)
        self.by_type.update(other.by_type)

    @property
    def balanced(self) -> bool:
        return self.read == self.accepted + self.quarantined + self.duplicates

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "entities": self.entities,
            "by_reason": dict(sorted(self.by_reason.items())),
            "by_type": dict(sorted(self.by_type.items())),
        }
