"""Replay protection: each request id (``jti``) of an issuer is accepted once, by every server process.

The id goes into ``api_request_id`` *after* the request's signature and claims have checked out (so nobody
can fill the table with forged ids): for a data query in the request's one write transaction, together with
its audit entries (:meth:`ReplayStore.claim_in`), else in a short transaction of its own
(:meth:`ReplayStore.claim`). ``INSERT … ON CONFLICT DO NOTHING … RETURNING`` inserts one row or none: the
database's primary key decides between racing processes and the loser gets no row back — a replay. On
PostgreSQL a transaction that inserts an id another open transaction inserted waits for that one to end: if
it commits, the waiter gets no row; if it rolls back (its request failed and released nothing), the waiter's
row goes in. Rows stay until the token could no longer be valid (``exp`` plus the
clock-skew allowance); :meth:`ReplayStore.purge` deletes older ones, and the server runs it periodically.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, bindparam, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from governance.api.tables import REQUEST_ID, ensure_tables
from governance.audit.log import local_writer
from governance.sharing.driver import DriverStatement


class ReplayStore:
    """Used request ids in the shared database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self._claim = DriverStatement(
            insert(REQUEST_ID).values(iss=bindparam("iss"), jti=bindparam("jti"), expires_at=bindparam("expires_at"))
            .on_conflict_do_nothing(index_elements=["iss", "jti"]).returning(REQUEST_ID.c.jti))
        """Built once, run on the driver's cursor in the caller's transaction: one row or none, and the row's jti
        when it went in."""
        ensure_tables(engine)

    def claim(self, iss: str, jti: str, expires_at: int) -> bool:
        """Record ``(iss, jti)``; False when it was already recorded (a replay)."""
        with local_writer(self.engine), self.engine.begin() as conn:
            return self.claim_in(conn, iss, jti, expires_at)

    def claim_in(self, conn: Connection, iss: str, jti: str, expires_at: int) -> bool:
        """Record ``(iss, jti)`` in ``conn``'s transaction (it counts once that commits); False for a replay."""
        inserted = self._claim.first(conn, {"iss": iss, "jti": jti, "expires_at": expires_at})
        return inserted is not None

    def purge(self, now: int) -> int:
        """Delete ids whose tokens expired before ``now`` (Unix seconds); returns how many went."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(REQUEST_ID).where(REQUEST_ID.c.expires_at < now))
        return int(result.rowcount or 0)
