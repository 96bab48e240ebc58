"""Tables of the collection stage: the message ledger, stored entities and the quarantine.

Rows are written in batches through SQLAlchemy Core (``Table.insert()`` with many parameter sets);
the SQLModel classes define the schema once for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, text
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")
BytesType = LargeBinary().with_variant(BYTEA(), "postgresql")


def _utc_column(*, index: bool = False, nullable: bool = False) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), index=index, nullable=nullable))


class IngestMessage(SQLModel, table=True):
    """The ledger of every message ever seen, by fingerprint: the basis of idempotent ingest."""

    __tablename__ = "ingest_message"

    fingerprint: str = Field(primary_key=True, max_length=64)
    adapter: str = Field(max_length=64)
    status: str = Field(max_length=16, description="stored | quarantined")
    received_at: datetime = _utc_column()
    entity_count: int = 0


class EntityRecord(SQLModel, table=True):
    """One stored entity observation in key-values form, with its provenance."""

    __tablename__ = "entity"
    __table_args__ = (
        Index("ix_entity_type_observed", "entity_type", "observed_at"),
        # only rows that have a data subject: most datasets have none, and their NULLs cost an index entry each
        Index("ix_entity_subject", "subject", sqlite_where=text("subject IS NOT NULL"),
              postgresql_where=text("subject IS NOT NULL")),
    )

    pk: int | None = Field(default=None, primary_key=True)
    entity_id: str = Field(index=True, max_length=256)
    entity_type: str = Field(max_length=64)
    dataset: str = Field(index=True, max_length=64)
    observed_at: datetime | None = _utc_column(nullable=True)
    data: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    adapter: str = Field(max_length=64)
    adapter_version: str = Field(max_length=32)
    source: str = Field(max_length=512)
    received_at: datetime = _utc_column()
    stored_at: datetime = _utc_column()
    raw_sha256: str = Field(max_length=64)
    message_fingerprint: str = Field(max_length=64)
    """The ledger row this entity came from; one message may hold several observations of one thing.
    Not indexed: nothing looks entities up by message, and a random 64-hex key costs every insert a
    B-tree descent into a cold page (about a quarter of the insert time on SQLite)."""
    removed_fields: list[str] = Field(default_factory=list, sa_column=Column(JSONType, nullable=False))
    subject: str | None = Field(default=None, max_length=64)
    """The data subject's pseudonym (``psn:v1:…``) for types that have one: erasure and export go by it
    (partial index ``ix_entity_subject``)."""
    retain_until: datetime | None = _utc_column(index=True, nullable=True)
    """The retention deadline the storage decision set at write; the sweep deletes past it."""
    policy_revision: str | None = Field(default=None, max_length=64)
    """The policy revision whose storage decision protected this row."""


class QuarantineRecord(SQLModel, table=True):
    """A record that failed somewhere, kept with its raw bytes and a reason a person can act on."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_status_reason", "status", "reason"),)

    pk: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(index=True, max_length=64)
    adapter: str = Field(index=True, max_length=64)
    adapter_version: str = Field(max_length=32)
    config_ref: str | None = Field(default=None, max_length=1024)
    source: str = Field(max_length=512)
    topic: str | None = Field(default=None, max_length=1024)
    context: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONType, nullable=False))
    received_at: datetime = _utc_column()
    quarantined_at: datetime = _utc_column(index=True)
    step: str = Field(max_length=32)
    reason: str = Field(max_length=64)
    detail: str = Field(max_length=2000)
    field: str | None = Field(default=None, max_length=256)
    payload: bytes = Field(sa_column=Column(BytesType, nullable=False))
    payload_size: int
    payload_sha256: str = Field(max_length=64)
    payload_truncated: bool = False
    status: str = Field(default="open", max_length=16, description="open | resolved")
    attempts: int = 1
    resolved_at: datetime | None = _utc_column(nullable=True)
    subject: str | None = Field(default=None, index=True, max_length=64)
    """The pseudonym of the data subject the payload names, when it could be read: sealed under their key."""
    sealed: bool = False
    """``payload`` is sealed (``enc:v1`` bytes under the quarantine key): feeds that can carry personal data."""
    retain_until: datetime | None = _utc_column(index=True, nullable=True)
    """When the raw payload expires; the retention sweep deletes the row after it."""
