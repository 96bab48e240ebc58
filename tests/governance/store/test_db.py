"""Every SQLite connection the store opens is set up for one writer and many readers, and for batch writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import text

from governance.store.db import (
    SQLITE_CACHE_KIB,
    SQLITE_CHECKPOINT_BYTES,
    SQLITE_CHECKPOINT_PAGES,
    SQLITE_PAGE_BYTES,
    create_db_engine,
    init_schema,
)


def test_sqlite_connections_get_the_store_pragmas(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with engine.connect() as conn:
            def pragma(name: str) -> object:
                return conn.execute(text(f"PRAGMA {name}")).scalar_one()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("foreign_keys") == 1
            assert pragma("cache_size") == -SQLITE_CACHE_KIB
            assert pragma("wal_autocheckpoint") == SQLITE_CHECKPOINT_PAGES
            assert pragma("journal_size_limit") == SQLITE_CHECKPOINT_BYTES
            assert pragma("page_size") == SQLITE_PAGE_BYTES == 16384
    finally:
        engine.dispose()


def test_a_new_database_gets_large_pages_and_they_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = create_db_engine(f"sqlite:///{path}")
    init_schema(engine)
    engine.dispose()
    with sqlite3.connect(path) as raw:  # what the file says, not what a connection was told
        assert raw.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_BYTES
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_an_existing_database_keeps_its_page_size_and_checkpoints_at_the_same_wal_size(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:  # a database created before the page size changed: 4 KiB pages
        raw.execute("PRAGMA page_size=4096")
        raw.execute("CREATE TABLE kept (x INTEGER)")
        raw.execute("INSERT INTO kept VALUES (1)")
    raw.close()
    engine = create_db_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA page_size")).scalar_one() == 4096
            assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == SQLITE_CHECKPOINT_BYTES // 4096
            assert conn.execute(text("SELECT x FROM kept")).scalar_one() == 1
    finally:
        engine.dispose()
