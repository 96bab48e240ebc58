"""Every SQLite connection the store opens is set up for one writer and many readers, and for batch writes."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from governance.store.db import SQLITE_CACHE_KIB, SQLITE_CHECKPOINT_PAGES, create_db_engine


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
            assert pragma("journal_size_limit") == SQLITE_CHECKPOINT_PAGES * 4096
    finally:
        engine.dispose()
