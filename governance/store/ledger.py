"""The message ledger: which fingerprints have been seen, and what became of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, update

from governance.store.bulk import insert_rows
from governance.store.tables import IngestMessage

_TABLE = IngestMessage.__table__  # type: ignore[attr-defined]
#: Keep IN lists well under every driver's parameter limit.
_CHUNK = 900
#: Fingerprints per array lookup on PostgreSQL.
_ARRAY_CHUNK = 10_000


def known_fingerprints(conn: Connection, fingerprints: Iterable[str]) -> dict[str, str]:
    """The status of each fingerprint already in the ledger."""
    wanted = list(dict.fromkeys(fingerprints))
    found: dict[str, str] = {}
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        # one array parameter per query: a statement with hundreds of placeholders costs PostgreSQL
        # ~10 µs per value to bind and plan, an array of text ~1 µs
        for start in range(0, len(wanted), _ARRAY_CHUNK):
            chunk = wanted[start : start + _ARRAY_CHUNK]
            found.update(conn.exec_driver_sql(_array_lookup(conn), (chunk,)).fetchall())
        return found
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        found.update(conn.exec_driver_sql(_lookup(conn, len(chunk)), tuple(chunk)).fetchall())
    return found


_LOOKUPS: dict[tuple[str, str, int], str] = {}


def _lookup(conn: Connection, count: int) -> str:
    """``SELECT fingerprint, status … WHERE fingerprint IN (…)`` with ``count`` driver placeholders.

    Written for the driver directly: SQLAlchemy's expanding ``IN`` costs more per value than the
    lookup itself does.
    """
    dialect = conn.dialect
    key = (dialect.name, dialect.paramstyle, count)
    statement = _LOOKUPS.get(key)
    if statement is None:
        if dialect.paramstyle not in ("qmark", "format", "pyformat"):
            raise NotImplementedError(f"ledger lookups need a qmark or format driver, not {dialect.paramstyle}")
        quote = dialect.identifier_preparer.quote
        mark = "?" if dialect.paramstyle == "qmark" else "%s"
        table = dialect.identifier_preparer.format_table(_TABLE)
        statement = (
            f"SELECT {quote('fingerprint')}, {quote('status')} FROM {table} "
            f"WHERE {quote('fingerprint')} IN ({', '.join([mark] * count)})"
        )
        _LOOKUPS[key] = statement
    return statement


def _array_lookup(conn: Connection) -> str:
    """``SELECT fingerprint, status … WHERE fingerprint = ANY(%s)``: the fingerprints as one text array."""
    preparer = conn.dialect.identifier_preparer
    return (
        f"SELECT {preparer.quote('fingerprint')}, {preparer.quote('status')} FROM {preparer.format_table(_TABLE)} "
        f"WHERE {preparer.quote('fingerprint')} = ANY(%s::text[])"
    )


def add_messages(conn: Connection, rows: Sequence[dict[str, Any]], *, memo: dict[Any, dict[Any, Any]] | None = None
                 ) -> None:
    """Insert new ledger rows (a duplicate fingerprint raises ``IntegrityError``)."""
    insert_rows(conn, _TABLE, rows, memo=memo)


def set_status(conn: Connection, fingerprint: str, status: str, entity_count: int) -> None:
    conn.execute(
        update(_TABLE)
        .where(_TABLE.c.fingerprint == fingerprint)
        .values(status=status, entity_count=entity_count)
    )
