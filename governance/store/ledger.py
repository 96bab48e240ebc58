"""The message ledger: which fingerprints have been seen, and what became of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, select, update

from governance.store.tables import IngestMessage

_TABLE = IngestMessage.__table__  # type: ignore[attr-defined]
#: Keep IN lists well under every driver's parameter limit.
_CHUNK = 900


def known_fingerprints(conn: Connection, fingerprints: Iterable[str]) -> dict[str, str]:
    """The status of each fingerprint already in the ledger."""
    wanted = list(dict.fromkeys(fingerprints))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        rows = conn.execute(select(_TABLE.c.fingerprint, _TABLE.c.status).where(_TABLE.c.fingerprint.in_(chunk)))
        found.update({fp: status for fp, status in rows})
    return found


def add_messages(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert new ledger rows (a duplicate fingerprint raises ``IntegrityError``)."""
    if rows:
        conn.execute(_TABLE.insert(), list(rows))


def set_status(conn: Connection, fingerprint: str, status: str, entity_count: int) -> None:
    conn.execute(
        update(_TABLE)
        .where(_TABLE.c.fingerprint == fingerprint)
        .values(status=status, entity_count=entity_count)
    )
