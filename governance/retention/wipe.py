"""Deleting so that the bytes go too: SQLite keeps deleted rows in free pages and in the write-ahead log.

``secure_delete`` makes SQLite overwrite deleted content with zeros (for the deletions of one connection);
``truncate_wal`` then copies the pages back and truncates the ``-wal`` file, which still holds the old page
images. PostgreSQL needs neither call: deleted tuples are invisible to every reader and dump, and their
space is reused after VACUUM (the encrypted fields in them are unreadable after crypto-shredding anyway;
see docs/protection.md for what remains in dead tuples and WAL archives).
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)


def secure_delete(conn: Connection) -> None:
    """On SQLite, zero the content of whatever this connection deletes from now on."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA secure_delete = ON")


def truncate_wal(engine: Engine) -> bool:
    """On SQLite, checkpoint and truncate the write-ahead log; False if a reader kept it from completing."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    if busy:
        log.warning("the SQLite write-ahead log could not be truncated (a reader is active); it will be at the "
                    "next checkpoint", extra={"component": "retention"})
    return not busy
