"""The quarantine: every record that failed, with its raw payload, until it is fixed and retried."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from governance.errors import NotFoundError
from governance.store.entities import as_utc
from governance.store.tables import QuarantineRecord

_TABLE = QuarantineRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class QuarantineFilter:
    status: str | None = "open"
    adapter: str | None = None
    reason: str | None = None
    limit: int = 100


def add_quarantined(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        conn.execute(_TABLE.insert(), list(rows))


def list_quarantined(engine: Engine, where: QuarantineFilter) -> list[dict[str, Any]]:
    query = select(_TABLE).order_by(_TABLE.c.pk).limit(where.limit)
    if where.status:
        query = query.where(_TABLE.c.status == where.status)
    if where.adapter:
        query = query.where(_TABLE.c.adapter == where.adapter)
    if where.reason:
        query = query.where(_TABLE.c.reason == where.reason)
    with engine.connect() as conn:
        return [_row(r._mapping) for r in conn.execute(query)]


def get_quarantined(engine: Engine, pk: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(_TABLE).where(_TABLE.c.pk == pk)).first()
    if row is None:
        raise NotFoundError(f"no quarantined record #{pk}")
    return _row(row._mapping)


def counts_by_reason(engine: Engine, status: str = "open") -> dict[str, int]:
    query = (
        select(_TABLE.c.reason, func.count()).where(_TABLE.c.status == status).group_by(_TABLE.c.reason)
    )
    with engine.connect() as conn:
        return {str(r): int(n) for r, n in conn.execute(query)}


def mark_resolved(conn: Connection, pk: int, when: datetime) -> None:
    conn.execute(update(_TABLE).where(_TABLE.c.pk == pk).values(status="resolved", resolved_at=when))


def mark_failed_again(conn: Connection, pk: int, *, step: str, reason: str, detail: str,
                      field: str | None) -> None:
    conn.execute(
        update(_TABLE)
        .where(_TABLE.c.pk == pk)
        .values(step=step, reason=reason, detail=detail, field=field, attempts=_TABLE.c.attempts + 1)
    )


def _row(mapping: Any) -> dict[str, Any]:
    row = dict(mapping)
    for key in ("received_at", "quarantined_at", "resolved_at"):
        row[key] = as_utc(row[key])
    row["payload"] = bytes(row["payload"])
    return row
