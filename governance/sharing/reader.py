"""Reading stored observations for a query: parameterized filters and keyset pages over the ``entity`` table.

Every filter is a bound parameter (dataset, observation-time range, entity ids, the page's last primary
key); nothing from a request is ever part of SQL text. Rows past their retention deadline are not read.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, or_, select

from governance.store.entities import as_utc
from governance.store.tables import EntityRecord

_TABLE: Table = EntityRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class StoredRow:
    pk: int
    entity_id: str
    entity_type: str
    observed_at: datetime | None
    data: dict[str, Any]
    subject: str | None


@dataclass(frozen=True)
class RowFilter:
    dataset: str
    now: datetime
    observed_from: datetime | None = None
    observed_to: datetime | None = None
    entity_ids: Collection[str] | None = None


def read_rows(engine: Engine, where: RowFilter, *, after: int, limit: int) -> list[StoredRow]:
    """Up to ``limit`` rows with primary key above ``after``, in primary-key order."""
    query = (
        select(_TABLE.c.pk, _TABLE.c.entity_id, _TABLE.c.entity_type, _TABLE.c.observed_at, _TABLE.c.data,
               _TABLE.c.subject)
        .where(_TABLE.c.dataset == where.dataset, _TABLE.c.pk > after,
               or_(_TABLE.c.retain_until.is_(None), _TABLE.c.retain_until > where.now))
        .order_by(_TABLE.c.pk)
        .limit(limit)
    )
    if where.observed_from is not None:
        query = query.where(_TABLE.c.observed_at >= where.observed_from)
    if where.observed_to is not None:
        query = query.where(_TABLE.c.observed_at < where.observed_to)
    if where.entity_ids is not None:
        query = query.where(_TABLE.c.entity_id.in_(sorted(where.entity_ids)))
    with engine.connect() as conn:
        return [
            StoredRow(int(row.pk), row.entity_id, row.entity_type, as_utc(row.observed_at),
                      dict(row.data) if isinstance(row.data, dict) else {}, row.subject)
            for row in conn.execute(query)
        ]
