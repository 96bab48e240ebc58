"""The table the retention sweep writes: hourly aggregates of raw rows it deletes, where the policy keeps them.

One row per (dataset, entity type, entity, hour, property): how many values, their sum, minimum and maximum.
The row with ``property`` ``""`` counts observations. For datasets with a data subject the entity is ``""``
and only observation counts are kept — no identifier, no value: nothing personal outlives the raw rows.
Aggregates expire in their turn (``retain_until``), after the policy's ``aggregate`` retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Float, UniqueConstraint
from sqlmodel import Field, SQLModel


def _utc(*, index: bool = False) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=False, index=index))


class EntityAggregate(SQLModel, table=True):
    """Hourly summary of raw observations the retention sweep deleted."""

    __tablename__ = "entity_aggregate"
    __table_args__ = (
        UniqueConstraint("dataset", "entity_type", "entity_id", "hour", "property", name="uq_entity_aggregate"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    dataset: str = Field(max_length=64, index=True)
    entity_type: str = Field(max_length=64)
    entity_id: str = Field(max_length=256, description="The observed thing; '' for datasets with a data subject.")
    hour: datetime = _utc()
    property: str = Field(max_length=128, description="A numeric property, or '' for the observation count.")
    samples: int
    sum_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    min_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    max_value: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    retain_until: datetime = _utc(index=True)
    updated_at: datetime = _utc()
