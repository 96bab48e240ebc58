"""Reading stored observations for a query: parameterized filters and keyset pages over the ``entity`` table.

Every filter is a bound parameter (dataset, observation-time range, entity ids, the page's last primary
key); nothing from a request is ever part of SQL text. Rows past their retention deadline are not read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, func, or_, select

from governance.sharing.driver import DriverStatement
from governance.store.entities import as_utc
from governance.store.tables import EntityRecord

_TABLE: Table = EntityRecord.__table__  # type: ignore[attr-defined]


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for a read of one statement. On PostgreSQL it runs in autocommit: no ``BEGIN`` before the
    statement and no ``ROLLBACK`` when the connection goes back to the pool (two of the four round trips of a
    pooled read; a rollback also drops the connection's prepared statements). One statement sees the data
    committed when it starts, exactly as inside a READ COMMITTED transaction.

    Inside :func:`sharing_reads` for ``engine`` (this thread or task) every such read uses the block's one
    connection instead of taking one from the pool and giving it back each time."""
    shared = _SHARED.get()
    if shared is not None and shared.engine is engine:
        with shared.use() as conn:
            yield conn
        return
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


class SharedReads:
    """One pooled connection for the reads of one request, taken at its first read (see :func:`sharing_reads`)."""

    __slots__ = ("conn", "engine")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[Connection]:
        conn = self.conn
        if conn is None:
            conn = self.conn = self.engine.connect()
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
        try:
            yield conn
        except BaseException:
            self.close()  # a failed read may leave the connection in any state: the next read takes a fresh one
            raise

    def close(self) -> None:
        """Give the connection back to the pool (if one was taken)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()


_SHARED: ContextVar[SharedReads | None] = ContextVar("citygov_shared_reads", default=None)


@contextlib.contextmanager
def sharing_reads(engine: Engine) -> Iterator[SharedReads]:
    """Within this block (this thread or task), the single-statement reads of :func:`reading` on ``engine`` share
    one connection, given back to the pool when the block ends: a request's key lookup, agreements register and
    rows then cost one pool checkout instead of three. Every read is still its own statement, committed data as
    of its start (SQLite runs reads without ``BEGIN``; PostgreSQL in autocommit): nothing else changes.
    ``close()`` on what it yields gives the connection back early (a later read in the block takes another)."""
    shared = SharedReads(engine)
    token = _SHARED.set(shared)
    try:
        yield shared
    finally:
        _SHARED.reset(token)
        shared.close()


def release_shared(engine: Engine) -> None:
    """Give back the connection of this thread's (or task's) :func:`sharing_reads` block for ``engine``, if any:
    called before a write takes a connection of its own, so that a request never waits for a second pooled
    connection while it holds one (with more requests than connections, each would hold one and wait for
    another until the pool timeout failed them all). A later read in the block takes a connection again."""
    shared = _SHARED.get()
    if shared is not None and shared.engine is engine:
        shared.close()


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
    ids = sorted(where.entity_ids) if where.entity_ids is not None else None
    query = _driver_statement(engine.dialect.name, where.observed_from is not None, where.observed_to is not None,
                              None if ids is None else len(ids))
    params: dict[str, Any] = {"dataset": where.dataset, "after": after, "now": where.now, "limit": limit}
    if where.observed_from is not None:
        params["observed_from"] = where.observed_from
    if where.observed_to is not None:
        params["observed_to"] = where.observed_to
    if ids is not None:
        params.update(zip(_id_names(len(ids)), ids, strict=True))
    with reading(engine) as conn:
        return [
            StoredRow(int(pk), entity_id, entity_type, as_utc(observed_at),
                      data if isinstance(data, dict) else {}, subject)
            for pk, entity_id, entity_type, observed_at, data, subject in query.rows(conn, params)
        ]


@lru_cache(maxsize=1024)
def _id_names(count: int) -> tuple[str, ...]:
    return tuple(f"entity_id_{i}" for i in range(count))


@lru_cache(maxsize=256)
def _driver_statement(dialect: str, observed_from: bool, observed_to: bool, ids: int | None) -> DriverStatement:
    """The statement of one filter shape (and number of ids), compiled once: every value is a bound parameter
    (the ids too: ``entity_id IN (:entity_id_0, …)``, one statement per count)."""
    entity_ids = ids is not None
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
    if ids is not None:
        query = query.where(_TABLE.c.entity_id.in_([bindparam(name) for name in _id_names(ids)]))
    return DriverStatement(query)
