"""Stored entities: batch inserts and streaming reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from governance.store.bulk import insert_rows
from governance.store.tables import EntityRecord

_TABLE = EntityRecord.__table__  # type: ignore[attr-defined]


def add_entities(conn: Connection, rows: Sequence[dict[str, Any]], *, memo: dict[Any, dict[Any, Any]] | None = None
                 ) -> None:
    """Insert entity rows (dicts keyed by column name) in the caller's transaction, through the driver."""
    insert_rows(conn, _TABLE, rows, memo=memo)


def count_entities(engine: Engine, entity_type: str | None = None) -> int:
    query = select(func.count()).select_from(_TABLE)
    if entity_type:
        query = query.where(_TABLE.c.entity_type == entity_type)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def counts_by_type(engine: Engine) -> dict[str, int]:
    query = select(_TABLE.c.entity_type, func.count()).group_by(_TABLE.c.entity_type)
    with engine.connect() as conn:
        return {str(t): int(n) for t, n in conn.execute(query)}


def iter_entities(
    engine: Engine, *, entity_type: str | None = None, page: int = 2000
) -> Iterator[dict[str, Any]]:
    """Stream stored rows (as dicts, ``data`` holding the key-values entity), oldest first.

    Pages by primary key so that memory stays flat on exports of millions of rows.
    """
    last = 0
    while True:
        query = select(_TABLE).where(_TABLE.c.pk > last).order_by(_TABLE.c.pk).limit(page)
        if entity_type:
            query = query.where(_TABLE.c.entity_type == entity_type)
        with engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(query)]
        if not rows:
            return
        for row in rows:
            for key in ("observed_at", "received_at", "stored_at"):
                row[key] = as_utc(row[key])
            yield row
        last = rows[-1]["pk"]


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything citygov stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
