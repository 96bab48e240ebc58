"""Hot reads on the driver's cursor (``governance.sharing.driver``) and one connection per request's reads
(``governance.sharing.reader.sharing_reads``): the same rows and values as SQLAlchemy's own execution, on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import DBAPIError

from governance.sharing.driver import DriverStatement
from governance.sharing.reader import RowFilter, read_rows, reading, sharing_reads
from governance.store.entities import as_utc
from governance.store.tables import EntityRecord
from tests.conftest import FIXED_NOW
from tests.governance.sharing.conftest import store, traffic

ENTITY: Any = EntityRecord.__table__  # type: ignore[attr-defined]


def _core_rows(engine: Engine, ids: list[str] | None) -> list[tuple[Any, ...]]:
    query = select(ENTITY.c.pk, ENTITY.c.entity_id, ENTITY.c.entity_type, ENTITY.c.observed_at, ENTITY.c.data,
                   ENTITY.c.subject).where(ENTITY.c.dataset == "lighting.traffic-flow").order_by(ENTITY.c.pk)
    if ids is not None:
        query = query.where(ENTITY.c.entity_id.in_(ids))
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]


def test_rows_read_on_the_driver_are_those_sqlalchemy_reads(db: Engine) -> None:
    entities = traffic(12)
    store(db, entities)
    everything = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW), after=0, limit=100)
    core = _core_rows(db, None)
    assert len(everything) == len(core) == 12
    for row, (pk, entity_id, entity_type, observed_at, data, subject) in zip(everything, core, strict=True):
        assert (row.pk, row.entity_id, row.entity_type, row.data, row.subject) == (
            pk, entity_id, entity_type, data, subject)
        assert row.observed_at is not None and row.observed_at.tzinfo is not None  # aware, UTC
        assert row.observed_at == as_utc(observed_at)
        assert isinstance(row.data, dict) and row.data["id"] == entity_id

    ids = sorted(e["id"] for e in entities[::3])
    chosen = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW, entity_ids=set(ids)), after=0, limit=100)
    assert [r.entity_id for r in chosen] == [row[1] for row in _core_rows(db, ids)] == ids
    # the same shape with another number of ids is another statement, with the right placeholders
    two = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW, entity_ids=set(ids[:2])), after=0, limit=100)
    assert [r.entity_id for r in two] == ids[:2]
    # keyset paging and the limit are bound values too
    page = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW), after=everything[4].pk, limit=3)
    assert [r.pk for r in page] == [r.pk for r in everything[5:8]]


def test_time_bounds_and_retention_are_compared_as_sqlalchemy_binds_them(db: Engine) -> None:
    entities = traffic(6, start=FIXED_NOW - timedelta(days=1))
    store(db, entities[:3])
    store(db, entities[3:], retain_until=FIXED_NOW - timedelta(seconds=1))  # past their retention: never read
    rows = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW), after=0, limit=100)
    assert sorted(r.entity_id for r in rows) == sorted(e["id"] for e in entities[:3])
    kept = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW - timedelta(seconds=2)), after=0, limit=100)
    assert len(kept) == 6  # not yet past it at that time
    times = sorted(r.observed_at for r in rows if r.observed_at is not None)
    window = read_rows(db, RowFilter("lighting.traffic-flow", FIXED_NOW, observed_from=times[1],
                                     observed_to=times[2]), after=0, limit=100)
    assert [r.observed_at for r in window] == [times[1]]  # from is inclusive, to exclusive


def test_driver_errors_are_sqlalchemy_errors(db: Engine) -> None:
    broken = DriverStatement(select(text("no_such_column")).select_from(ENTITY))
    with db.connect() as conn, pytest.raises(DBAPIError):
        broken.rows(conn, {})


def _checkouts(engine: Engine) -> list[int]:
    seen: list[int] = []
    event.listen(engine, "checkout", lambda *_: seen.append(1))
    return seen


def test_a_requests_reads_share_one_pooled_connection(db: Engine) -> None:
    store(db, traffic(3))
    seen = _checkouts(db)
    where = RowFilter("lighting.traffic-flow", FIXED_NOW)
    with sharing_reads(db) as reads:
        first = read_rows(db, where, after=0, limit=10)
        with reading(db) as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        second = read_rows(db, where, after=0, limit=10)
        assert len(seen) == 1
        reads.close()  # given back early: a later read takes another
        read_rows(db, where, after=0, limit=10)
        assert len(seen) == 2
    assert [r.pk for r in first] == [r.pk for r in second]
    read_rows(db, where, after=0, limit=10)  # outside the block: a connection of its own each time
    read_rows(db, where, after=0, limit=10)
    assert len(seen) == 4


def test_shared_reads_see_what_commits_between_them(db: Engine) -> None:
    where = RowFilter("lighting.traffic-flow", FIXED_NOW)
    with sharing_reads(db):
        assert read_rows(db, where, after=0, limit=10) == []
        store(db, traffic(1))  # another connection commits
        assert len(read_rows(db, where, after=0, limit=10)) == 1


def test_a_failed_shared_read_gives_its_connection_up(db: Engine) -> None:
    seen = _checkouts(db)
    with sharing_reads(db):
        with pytest.raises(DBAPIError), reading(db) as conn:
            conn.execute(text("SELECT no_such_column FROM entity"))
        with reading(db) as conn:  # a fresh connection, in a clean state
            assert conn.execute(text("SELECT 1")).scalar() == 1
    assert len(seen) == 2


def test_statements_run_many_on_the_driver_write_what_sqlalchemy_writes(db: Engine) -> None:
    """``execute_many``: one row (``execute``) or several (``executemany``) in the caller's transaction, each
    value bound through the column's type; a refused row raises SQLAlchemy's error and the rollback keeps
    nothing of the batch."""
    from sqlalchemy import bindparam, delete, insert
    from sqlalchemy.exc import IntegrityError

    from governance.audit.tables import NODE

    statement = DriverStatement(insert(NODE).inline().values(level=bindparam("level"), idx=bindparam("idx"),
                                                            hash=bindparam("hash")))
    rows = [{"level": 60, "idx": i, "hash": bytes([i]) * 32} for i in range(5)]
    with db.begin() as conn:
        statement.execute_many(conn, rows[:1])
        statement.execute_many(conn, rows[1:])
        statement.execute_many(conn, [])
    with db.connect() as conn:
        stored = [(int(level), int(idx), bytes(digest)) for level, idx, digest in conn.execute(
            select(NODE.c.level, NODE.c.idx, NODE.c.hash).where(NODE.c.level == 60).order_by(NODE.c.idx))]
    assert stored == [(r["level"], r["idx"], r["hash"]) for r in rows]
    with pytest.raises(IntegrityError), db.begin() as conn:
        statement.execute_many(conn, [{"level": 60, "idx": 9, "hash": b"x" * 32}, rows[0]])  # the second repeats
    with db.begin() as conn:
        assert conn.execute(select(NODE.c.idx).where(NODE.c.level == 60, NODE.c.idx == 9)).first() is None
        conn.execute(delete(NODE).where(NODE.c.level == 60))
