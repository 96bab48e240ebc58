"""The privacy budget ledger: epsilon spent under each agreement, in millionths (exact integer sums)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, DateTime
from sqlmodel import Field, SQLModel


class PrivacyBudgetRecord(SQLModel, table=True):
    """How much of an agreement's privacy budget differentially private answers have used."""

    __tablename__ = "privacy_budget"

    agreement_id: str = Field(primary_key=True, max_length=128)
    spent_micro: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    """Epsilon spent, in units of 1e-6 (each spend rounded up), so repeated spends add up exactly."""
    answers: int = 0
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
