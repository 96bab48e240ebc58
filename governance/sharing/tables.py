"""Tables of the sharing layer: the register of data-sharing agreements and their daily request counts.

The register holds each agreement's policy document (what ``data.city.agreements`` gets) next to the
terms only the sharing layer enforces (request quota, privacy budget). Rows are never deleted: a revoked
agreement keeps its row, with ``status = 'revoked'``, so its id is never reused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Engine, Index, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

JSONType = JSON().with_variant(JSONB(), "postgresql")


def _utc_column(*, nullable: bool = False) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=nullable))


class AgreementRecord(SQLModel, table=True):
    """One data-sharing agreement of the register."""

    __tablename__ = "sharing_agreement"
    __table_args__ = (Index("ix_sharing_agreement_recipient", "recipient", "status"),)

    agreement_id: str = Field(primary_key=True, max_length=128)
    title: str = Field(max_length=512)
    provider: str = Field(max_length=128)
    recipient: str = Field(max_length=128)
    recipient_kind: str = Field(max_length=16)
    document: dict[str, Any] = Field(sa_column=Column(JSONType, nullable=False))
    """The policy document of the agreement, exactly as ``data.city.agreements[id]`` receives it."""
    valid_from: datetime = _utc_column()
    valid_until: datetime = _utc_column()
    quota_per_day: int | None = None
    epsilon_budget: float | None = None
    status: str = Field(default="active", max_length=16, description="active | revoked")
    origin: str = Field(default="register", max_length=16, description="register | import | folder")
    created_at: datetime = _utc_column()
    updated_at: datetime = _utc_column()
    revoked_at: datetime | None = _utc_column(nullable=True)


class AgreementUsage(SQLModel, table=True):
    """Requests made under one agreement on one UTC day (the request quota)."""

    __tablename__ = "sharing_agreement_usage"

    agreement_id: str = Field(primary_key=True, max_length=128)
    day: str = Field(primary_key=True, max_length=10, description="YYYY-MM-DD, UTC")
    requests: int = 0


def ensure_tables(engine: Engine) -> None:
    """Create the register's and the privacy ledger's tables if missing (idempotent).

    ``governance.store.db`` creates every registered table at start; this covers a store opened before
    this module was imported.
    """
    from governance.anonymize.tables import PrivacyBudgetRecord

    tables: list[Table] = [SQLModel.metadata.tables[name] for name in (
        AgreementRecord.__tablename__, AgreementUsage.__tablename__, PrivacyBudgetRecord.__tablename__)]
    SQLModel.metadata.create_all(engine, tables=tables)
