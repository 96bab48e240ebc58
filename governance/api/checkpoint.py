"""SQLite WAL checkpoints off the request path, in a thread of the server process.

In WAL mode every commit appends its pages to the ``-wal`` file; a *checkpoint* copies them back into the
database file (an ``fdatasync`` of the WAL, the page copies, an ``fdatasync`` of the database). SQLite runs one
itself inside the commit that takes the WAL past ``wal_autocheckpoint`` (``governance.store.db``: 64 MiB of
pages, sized for ingest batches). In the API server that commit is a data query's, and on SQLite a data
query is answered on the event loop (docs/api.md): the whole checkpoint — 40 to 60 ms with 64 MiB of unsynced
WAL behind it, measured under the benchmark's load, every ~1,500 requests with 4 KiB pages, every ~375 with
16 KiB pages — then stalled every connection of the process, not only the request that crossed the threshold.

:class:`WalCheckpointer` runs ``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds in a daemon thread, on
a ``sqlite3`` connection of its own (outside the engine's pool, which the requests keep to themselves). A passive
checkpoint takes no lock that a writer or a reader waits for: it copies every frame no reader still needs and
returns (the ``sqlite3`` driver releases the GIL meanwhile, so the loop keeps answering). The commit that later
takes the WAL past ``wal_autocheckpoint`` then finds almost everything already copied and synced: its own
checkpoint — still there, unchanged, as the backstop, and what lets the WAL start again from its beginning under a
steady stream of writes — only copies the last ``interval``'s pages (measured: 40 to 57 ms became 10 to 24 ms).
Durability is unchanged: the same checkpoint with the same syncs, earlier; a crash at any point leaves what
``synchronous=NORMAL`` leaves.

Nothing here on PostgreSQL or on an in-memory SQLite database.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

from sqlalchemy import Engine

log = logging.getLogger("citygov.api")

CHECKPOINT_INTERVAL_SECONDS = 0.25
"""How often the server checkpoints the WAL; a checkpoint with nothing to copy costs one pragma."""


def needs_checkpointer(engine: Engine) -> bool:
    """True for a SQLite database in a file (the WAL lives next to it)."""
    if engine.dialect.name != "sqlite":
        return False
    database = engine.url.database
    return bool(database) and database != ":memory:" and not str(database).startswith("file::memory:")


class WalCheckpointer:
    """Passive WAL checkpoints every ``interval`` seconds in a daemon thread, until :meth:`stop`."""

    def __init__(self, engine: Engine, *, interval: float = CHECKPOINT_INTERVAL_SECONDS) -> None:
        self.engine = engine
        self.interval = interval
        self.checkpoints = 0
        """Passive checkpoints run (whether or not there was anything to copy)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._failing = False

    def checkpoint(self) -> tuple[int, int, int]:
        """One passive checkpoint: SQLite's ``(busy, frames in the WAL, frames checkpointed)``.

        Only the checkpointer's thread calls it once :meth:`start` has run (its connection is that thread's)."""
        if self._conn is None:
            # autocommit: the pragma runs outside any transaction; a passive checkpoint never waits on a lock
            self._conn = sqlite3.connect(str(self.engine.url.database), timeout=30, isolation_level=None,
                                         check_same_thread=False)
        row = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return (int(row[0]), int(row[1]), int(row[2])) if row else (0, -1, -1)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop = threading.Event()  # an app started again after a stop
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (it closes its connection); a no-op when it is not running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception:
                self.close()  # a fresh connection next time
                # commits still checkpoint on their own (``wal_autocheckpoint``): nothing is lost, only the tail
                # latency this thread saves; say so once per run of failures, not four times a second
                if not self._failing:
                    log.exception("WAL checkpoint failed; commits checkpoint on their own until it works again")
                self._failing = True
            else:
                if self._failing:
                    log.info("WAL checkpoints work again")
                self._failing = False
