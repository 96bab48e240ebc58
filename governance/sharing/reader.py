"""Reading stored observations for a query: parameterized filters and keyset pages over the ``entity`` table.

Every filter is a bound parameter (dataset, observation-time range, entity ids, the page's last primary
key); nothing from a request is ever part of SQL text. Rows past their retention deadline are not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, bindparam, func, or_, select

from governance.store.entities import as_utc
from governance.store.tables import EntityRecord

_TABLE: Table = EntityRecord.__table__  # type: ignore[attr-defined]


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for a read of one statement. On PostgreSQL it runs in autocommit: no ``BEGIN`` before the
    statement and no ``ROLLBACK`` when the connection goes back to the pool (two of the four round trips of a
    pooled read; a rollback also drops the connection's prepared statements). One statement sees the data
    committed when it starts, exactly as inside a READ COMMITTED transaction."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


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
    """Up to ``limit`` rows with primary key above ``after``, in primary-key order.

    With ``entity_ids`` the rows are found through the entity-id index: SQLite (without statistics) would
    otherwise walk the whole dataset in primary-key order through the dataset index, so there the dataset
    test is written so that no index serves it (``coalesce`` of a NOT NULL column: the same rows).
    """
    query = _statement(engine.dialect.name, where.observed_from is not None, where.observed_to is not None,
                       where.entity_ids is not None)
    params: dict[str, Any] = {"dataset": where.dataset, "after": after, "now": where.now, "limit": limit}
    if where.observed_from is not None:
        params["observed_from"] = where.observed_from
    if where.observed_to is not None:
        params["observed_to"] = where.observed_to
    if where.entity_ids is not None:
        params["entity_ids"] = sorted(where.entity_ids)
    with reading(engine) as conn:
        return [
            StoredRow(int(row.pk), row.entity_id, row.entity_type, as_utc(row.observed_at),
                      dict(row.data) if isinstance(row.data, dict) else {}, row.subject)
            for row in conn.execute(query, params)
        ]


@lru_cache(maxsize=32)
def _statement(dialect: str, observed_from: bool, observed_to: bool, entity_ids: bool) -> Select[Any]:
    """The statement of one filter shape, built once: every value is a bound parameter."""
    dataset = func.coalesce(_TABLE.c.dataset, "") if entity_ids and dialect == "sqlite" else _TABLE.c.dataset
    query = (
        select(_TABLE.c.pk, _TABLE.c.entity_id, _TABLE.c.entity_type, _TABLE.c.observed_at, _TABLE.c.data,
               _TABLE.c.subject)
        .where(dataset == bindparam("dataset"), _TABLE.c.pk > bindparam("after"),
               or_(_TABLE.c.retain_until.is_(None), _TABLE.c.retain_until > bindparam("now")))
        .order_by(_TABLE.c.pk)
        .limit(bindparam("limit"))
    )
    if observed_from:
        query = query.where(_TABLE.c.observed_at >= bindparam("observed_from"))
    if observed_to:
        query = query.where(_TABLE.c.observed_at < bindparam("observed_to"))
    if entity_ids:
        query = query.where(_TABLE.c.entity_id.in_(bindparam("entity_ids", expanding=True)))
    return query
