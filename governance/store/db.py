"""The database engine: SQLite (embedded default) or PostgreSQL, one code path for both."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from governance.anonymize import tables as _anonymize_tables  # noqa: F401  (tables register on the metadata)
from governance.api import tables as _api_tables  # noqa: F401
from governance.audit import tables as _audit_tables  # noqa: F401
from governance.consent import tables as _consent_tables  # noqa: F401
from governance.errors import ConfigurationError
from governance.protect import tables as _protect_tables  # noqa: F401
from governance.retention import tables as _retention_tables  # noqa: F401
from governance.sharing import tables as _sharing_tables  # noqa: F401
from governance.store import tables  # noqa: F401


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` URLs and pick the psycopg 3 driver for them."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine for ``url``, preparing SQLite for concurrent readers and one writer."""
    url = normalize_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigurationError(f"database URL is not valid: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"check_same_thread": False, "timeout": 30},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise ConfigurationError(f"unsupported database {parsed.get_backend_name()!r}: use SQLite or PostgreSQL")
    return create_engine(
        url, json_serializer=_json_dumps, json_deserializer=orjson.loads, pool_pre_ping=True, **kwargs
    )


SQLITE_CACHE_KIB = 64 * 1024
SQLITE_PAGE_BYTES = 16 * 1024
"""Page size of a database this process creates (an existing file keeps its own)."""
SQLITE_CHECKPOINT_BYTES = 64 * 1024 * 1024
SQLITE_CHECKPOINT_PAGES = SQLITE_CHECKPOINT_BYTES // SQLITE_PAGE_BYTES
"""``wal_autocheckpoint`` of a database this process creates (of an older 4 KiB-page file: four times as many)."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # 16 KiB pages instead of 4 KiB for a new database (set before WAL mode; a no-op on an existing file):
    # a commit writes each dirty page to the WAL as its own frame and system call, and an ingest batch
    # dirties tens of thousands of pages; with 16 KiB pages the same rows take a quarter of the frames and
    # B-tree splits. Measured on SQLite ingest: store step + commit 28 -> 23 µs per record (BENCHMARKS.md).
    cursor.execute(f"PRAGMA page_size={SQLITE_PAGE_BYTES}")
    cursor.execute("PRAGMA journal_mode=WAL")
    page_bytes = int(cursor.execute("PRAGMA page_size").fetchone()[0])
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # the default page cache (2 MiB) is smaller than the entity table's indexes after a few hundred
    # thousand rows, and every batch insert then re-reads index pages; 64 MiB is an upper bound per
    # connection (pages are allocated as they are used)
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    # Checkpoint the WAL into the database every 64 MiB instead of every 4 MiB (SQLite's default 1000 pages): a
    # batch of 20,000 entities writes more than 4 MiB, so by default every commit also ran a checkpoint
    # (all its pages written a second time, two fsyncs) — 4 to 5 µs of ~55 per ingested record. Index
    # pages that several batches touch are now copied once. After a checkpoint the WAL file is cut
    # back to 64 MiB. Durability is unchanged (WAL, synchronous=NORMAL).
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_CHECKPOINT_BYTES // page_bytes}")
    cursor.execute(f"PRAGMA journal_size_limit={SQLITE_CHECKPOINT_BYTES}")
    cursor.close()


def init_schema(engine: Engine) -> None:
    """Create missing tables (idempotent)."""
    SQLModel.metadata.create_all(engine)


def open_store(settings: Any) -> Engine:
    """The engine for the configured database, with its tables in place."""
    engine = create_db_engine(settings.resolved_database_url())
    init_schema(engine)
    return engine


@contextmanager
def scratch_schema(postgres_url: str, prefix: str = "scratch") -> Iterator[str]:
    """A URL whose connections use a fresh PostgreSQL schema of their own, dropped afterwards.

    Tests and benchmarks use it to get an empty database on a shared server without touching anyone
    else's tables.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_url(postgres_url))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in postgres_url else "?"
        try:
            yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
