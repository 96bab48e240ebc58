"""Tables of the consent registry: one row per consent, and its append-only history of events.

``consent`` holds what a consent covers (fixed at grant: a change of purpose is a new consent) and its
current state. ``consent_event`` holds every grant, renewal and withdrawal with the state it left behind
and the signed receipt issued for it; rows are only ever inserted. Lookups answer from the events, so a
question about time ``t`` sees exactly what was recorded by ``t`` — decisions replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def _utc(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index))


class ConsentRecord(SQLModel, table=True):
    """A consent as it stands. The subject is a pseudonym; the real id is never stored."""

    __tablename__ = "consent"
    __table_args__ = (Index("ix_consent_subject_status", "subject", "status"),)

    consent_id: str = Field(primary_key=True, max_length=64)
    subject: str = Field(max_length=64)
    controller: str = Field(max_length=256)
    on_behalf: bool = False
    purposes: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    recipients: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    legal_basis: str = Field(max_length=32)
    collection_method: str = Field(max_length=256)
    jurisdiction: str = Field(max_length=64)
    language: str = Field(max_length=16)
    policy_url: str | None = Field(default=None, max_length=1024)
    special_categories: list[str] = Field(sa_column=Column(JSONType, nullable=False))
    valid_from: datetime = _utc()
    valid_until: datetime | None = _utc(nullable=True)
    status: str = Field(max_length=16, description="active | withdrawn")
    granted_at: datetime = _utc()
    updated_at: datetime = _utc()
    withdrawn_at: datetime | None = _utc(nullable=True)
    seq: int = Field(description="Sequence number of the latest event.")


class ConsentEvent(SQLModel, table=True):
    """One grant, renewal or withdrawal, with the state it left and its receipt. Insert-only."""

    __tablename__ = "consent_event"
    __table_args__ = (UniqueConstraint("consent_id", "seq", name="uq_consent_event_seq"),)

    pk: int | None = Field(default=None, primary_key=True)
    consent_id: str = Field(index=True, max_length=64)
    seq: int
    event: str = Field(max_length=16, description="grant | renew | withdraw")
    at: datetime = _utc(index=True)
    actor: str = Field(max_length=256)
    reason: str | None = Field(default=None, max_length=1000)
    status: str = Field(max_length=16)
    valid_from: datetime = _utc()
    valid_until: datetime | None = _utc(nullable=True)
    receipt_id: str = Field(max_length=64, unique=True)
    receipt: str = Field(sa_column=Column(Text, nullable=False))
