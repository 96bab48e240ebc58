"""Tables of the protection layer: keys stored wrapped under the master key, and per-subject data keys.

Neither table holds a usable key on its own: ``protect_key`` rows need the master key (outside the
database); ``subject_key`` rows need the master key *and* the subject's secret in the keystore (outside
the database and its backups), which is what erasure deletes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, LargeBinary
from sqlalchemy.dialects.postgresql import BYTEA
from sqlmodel import Field, SQLModel

BytesType = LargeBinary().with_variant(BYTEA(), "postgresql")


class ProtectKey(SQLModel, table=True):
    """A long-lived secret of the layer (pseudonym key, receipt-signing key), wrapped under a master key version.

    Stored rather than derived so that rotating the master key never changes a pseudonym or a receipt
    key: rotation re-wraps these rows, and the old master key version can then be retired.
    """

    __tablename__ = "protect_key"

    purpose: str = Field(primary_key=True, max_length=32)
    version: int = Field(primary_key=True)
    kek_version: int
    wrapped_key: bytes = Field(sa_column=Column(BytesType, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    rewrapped_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class SubjectKey(SQLModel, table=True):
    """One data subject's data key (DEK), wrapped; after erasure a tombstone with no key bytes."""

    __tablename__ = "subject_key"

    subject: str = Field(primary_key=True, max_length=64, description="The subject's pseudonym.")
    key_version: int = Field(description="Master key version that wrapped the DEK.")
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(BytesType, nullable=True))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    rewrapped_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    destroyed_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
