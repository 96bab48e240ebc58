"""Appending to the audit log: one linear log, however many processes write to it.

Every append locks the single ``audit_head`` row (an ``UPDATE`` that bumps ``appends``: a row lock on
PostgreSQL, the database write lock on SQLite — taken by the first write of the transaction, so there is
no read-then-upgrade deadlock) and returns the tree size and frontier in the same statement, writes the
new entries, the subtree nodes they complete, the new head and a signed tree head, all in the caller's
transaction. Concurrent writers therefore queue on the head row and each sees the other's committed
entries: no gaps, no forks, no duplicate sequence numbers; a writer killed mid-append leaves nothing behind.

Make the append the *last* write of a transaction (the ingest observer is): the head lock is held until
commit and serializes every writer of the log. PostgreSQL must run at READ COMMITTED (its default).

Data subjects are written as the keyring's pseudonyms (``Pseudonyms(keyring).subject_ref``: a raw id is
hashed, a ``psn:v1:`` pseudonym is kept), the same values the consent registry and the store hold, so one
lookup finds a person's ingest batches, policy decisions, consent changes and erasure. The keyring is
loaded when the log is opened if the master key is at hand, else at the first entry that names a subject.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from governance.audit.canonical import canonical_entry_bytes, format_time
from governance.audit.entries import AuditEvent, build_entry
from governance.audit.errors import AuditError, AuditKeyError, InvalidAuditEventError
from governance.audit.keys import LogKeys, PublicKey
from governance.audit.merkle import EMPTY_ROOT, Frontier, leaf_hash
from governance.audit.tables import ENTRY, HEAD, HEAD_ID, NODE, TREE_HEAD
from governance.audit.treehead import TreeHead, tree_head_message
from governance.config import Settings
from governance.errors import ConfigurationError
from governance.protect.errors import ProtectionError
from governance.protect.keyring import Keyring
from governance.protect.pseudonym import Pseudonyms, is_pseudonym
from governance.sharing.driver import DriverStatement, driver_error

NODE_LEVEL_STRIDE = 4
"""Subtree roots are stored at levels 4, 8, 12…; leaf hashes (level 0) live in ``audit_entry``."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class HeadState:
    tree_size: int
    frontier: Frontier
    root_hash: bytes
    key_id: str
    tree_head_ms: int
    """Timestamp of the newest signed tree head: the next one is never older, whatever a worker's clock says."""


@dataclass(frozen=True)
class AppendResult:
    first_seq: int
    count: int
    tree_head: TreeHead | None


KeyringSource = Keyring | Callable[[], Keyring]
"""The keyring whose pseudonym key names data subjects, or how to load it when first needed."""


class AuditLog:
    """The audit log of one store, with the keys of one data directory."""

    def __init__(
        self, engine: Engine, keys: LogKeys, *, clock: Clock = utc_now, keyring: KeyringSource | None = None
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.clock = clock
        self.public_key: PublicKey = keys.public
        self.key_id = self.public_key.key_id
        self._keyring = keyring
        self._pseudonyms: Pseudonyms | None = None

    @classmethod
    def open(
        cls,
        engine: Engine,
        data_dir: Path,
        *,
        clock: Clock = utc_now,
        keyring: Keyring | None = None,
        settings: Settings | None = None,
    ) -> AuditLog:
        """Load (or on first start create) the keys, and make sure the log's head row exists.

        Subjects are pseudonymized with ``keyring`` — else the keyring of ``settings``, else of the
        environment's settings for ``data_dir``. Pass the process's own keyring or settings whenever it has
        them: a keyring built from other settings (another master key) would not open this store's keys.
        """
        source: KeyringSource
        if keyring is not None:
            source = keyring
        else:
            config = settings if settings is not None else Settings(data_dir=data_dir)

            def source() -> Keyring:
                return Keyring.from_settings(config, engine, clock=clock)

        log = cls(engine, LogKeys.load_or_create(data_dir), clock=clock, keyring=source)
        with engine.begin() as conn:
            log._ensure_head(conn)
            head = read_head(conn)
        if head is not None and head.key_id != log.key_id:
            raise AuditKeyError(
                f"this log is signed with key {head.key_id[:16]}…, but {data_dir} holds key {log.key_id[:16]}…: "
                "every writer of one log must share its key files"
            )
        # Load the pseudonym key now, outside any caller's transaction (creating it inside one would wait on
        # that transaction's own write lock on SQLite). Without a master key (an auditor's read-only
        # process), wait: only entries that name a subject need it.
        with contextlib.suppress(ConfigurationError):
            log.subject_pseudonyms()
        return log

    def subject_pseudonyms(self) -> Pseudonyms:
        """The keyring's pseudonyms, the one form a data subject takes in the log."""
        if self._pseudonyms is None:
            source = self._keyring
            if source is None:
                raise AuditKeyError("this audit log has no keyring: it cannot name data subjects")
            self._pseudonyms = Pseudonyms(source if isinstance(source, Keyring) else source())
        return self._pseudonyms

    def pseudonymize(self, subject: str) -> str:
        """A subject as the log writes it: a raw id is pseudonymized, a ``psn:v1:`` pseudonym kept as it is.

        A pseudonym needs no key, so an auditor without the master key can still look one up.
        """
        if is_pseudonym(subject):
            return subject
        try:
            return self.subject_pseudonyms().subject_ref(subject)
        except ProtectionError as exc:
            raise InvalidAuditEventError(f"a subject id cannot be pseudonymized: {exc}") from None

    def append(
        self,
        events: Sequence[AuditEvent],
        *,
        conn: Connection | None = None,
        now: datetime | None = None,
        sign: bool = True,
        then: Callable[[int], Sequence[AuditEvent]] | None = None,
    ) -> AppendResult:
        """Append ``events`` in order (inside ``conn``'s transaction when given) and sign the new tree head.

        ``then``, if given, is called under the head lock with the sequence number of the first entry after
        ``events``, and the events it returns are appended right after them in the same go: for an entry that
        names an earlier one's number (a request entry naming its policy decision). They name no data subjects.
        """
        for event in events:
            event.check()
        # Pseudonyms before the head lock is taken: the keyring may have to read its key first.
        names = {s: self.pseudonymize(s) for s in {s for event in events for s in event.subjects}}
        subjects = [[names[s] for s in event.subjects] for event in events]
        if conn is None:
            with local_writer(self.engine), self.engine.begin() as own:
                return self._append(own, events, subjects, now, sign, then)
        return self._append(conn, events, subjects, now, sign, then)

    def sign_tree_head(self, *, conn: Connection | None = None) -> TreeHead:
        """Issue a signed tree head for the log as it is now (on demand)."""
        tree_head = self.append([], conn=conn, sign=True).tree_head
        assert tree_head is not None
        return tree_head

    def _append(
        self,
        conn: Connection,
        events: Sequence[AuditEvent],
        subjects: Sequence[Sequence[str]],
        now: datetime | None,
        sign: bool,
        then: Callable[[int], Sequence[AuditEvent]] | None = None,
    ) -> AppendResult:
        head = self._lock_head(conn)
        if then is not None:
            more = list(then(head.frontier.size + len(events)))
            for event in more:
                event.check()
                if event.subjects:
                    raise InvalidAuditEventError("events appended through 'then' cannot name data subjects")
            events = [*events, *more]
            subjects = [*subjects, *([] for _ in more)]
        moment = now or self.clock()
        default_time = format_time(moment)
        frontier = head.frontier
        first = frontier.size
        entry_rows: list[dict[str, Any]] = []
        node_rows: list[dict[str, Any]] = []

        def keep(level: int, index: int, digest: bytes) -> None:
            if level % NODE_LEVEL_STRIDE == 0:
                node_rows.append({"level": level, "idx": index, "hash": digest})

        for offset, (event, pseudonyms) in enumerate(zip(events, subjects, strict=True)):
            seq = first + offset
            time_text = format_time(event.time) if event.time is not None else default_time
            data = canonical_entry_bytes(build_entry(event, seq, time_text, pseudonyms))
            digest = leaf_hash(data)
            frontier.append(digest, keep)
            entry_rows.append({"seq": seq, "entry": data, "leaf_hash": digest, "time": time_text,
                               "actor": event.actor, "action": event.action, "decision": event.decision})
        root = frontier.root()
        if entry_rows:
            _insert_entries(conn, entry_rows)
        if node_rows:
            _INSERT_NODES.execute_many(conn, node_rows)
        tree_head = None
        head_values: dict[str, Any] = {"tree_size": frontier.size, "frontier": frontier.to_bytes(), "root_hash": root}
        if sign:
            timestamp = max(_millis(self.clock()), head.tree_head_ms)
            # TreeHead.sign, with the key id this log already holds (deriving it costs as much as the signature)
            signature = self.keys.sign(tree_head_message(frontier.size, timestamp, root, self.key_id))
            tree_head = TreeHead(frontier.size, root, timestamp, self.key_id, signature)
            _INSERT_TREE_HEAD.execute(conn, {
                "tree_size": tree_head.tree_size, "root_hash": tree_head.root_hash,
                "timestamp_ms": tree_head.timestamp_ms, "key_id": tree_head.key_id,
                "signature": tree_head.signature,
            })
            head_values["tree_head_ms"] = tree_head.timestamp_ms
            _SET_SIGNED_HEAD.execute(conn, head_values)
        else:
            _SET_HEAD.execute(conn, head_values)
        return AppendResult(first_seq=first, count=len(entry_rows), tree_head=tree_head)

    def _lock_head(self, conn: Connection) -> HeadState:
        row = _BUMP_HEAD.first(conn, {})  # the lock, and the head as it is under the lock
        if row is None:
            self._ensure_head(conn)
            row = _BUMP_HEAD.first(conn, {})
        if row is None:
            raise AuditError("the audit head row vanished during an append")
        head = _head_of(row)
        if head.key_id != self.key_id:
            raise AuditKeyError(
                f"this log is signed with key {head.key_id[:16]}…, this process holds {self.key_id[:16]}…"
            )
        return head

    def _ensure_head(self, conn: Connection) -> None:
        values = {"id": HEAD_ID, "tree_size": 0, "frontier": b"", "root_hash": EMPTY_ROOT,
                  "key_id": self.key_id, "appends": 0, "tree_head_ms": 0}
        if conn.dialect.name == "postgresql":
            conn.execute(pg_insert(HEAD).values(**values).on_conflict_do_nothing(index_elements=["id"]))
        else:
            conn.execute(sqlite_insert(HEAD).values(**values).on_conflict_do_nothing(index_elements=["id"]))

    # --- reading ------------------------------------------------------------------------------------------

    def head(self) -> HeadState | None:
        with self.engine.connect() as conn:
            return read_head(conn)

    def latest_tree_head(self) -> TreeHead | None:
        with self.engine.connect() as conn:
            return latest_tree_head(conn)


_PG_INSERT_ENTRIES = (
    "INSERT INTO audit_entry (seq, entry, leaf_hash, time, actor, action, decision) "
    "SELECT * FROM unnest(%b::bigint[], %b::bytea[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::text[])"
)
_ENTRY_COLUMNS = ("seq", "entry", "leaf_hash", "time", "actor", "action", "decision")


def _insert_entries(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert entry rows: on PostgreSQL as one statement over arrays (5x faster than executemany)."""
    if conn.dialect.name != "postgresql":
        _INSERT_ENTRIES.execute_many(conn, rows)
        return
    columns = tuple([row[c] for row in rows] for c in _ENTRY_COLUMNS)
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        cursor.execute(_PG_INSERT_ENTRIES, columns, binary=True)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise driver_error(conn, driver, cursor, _PG_INSERT_ENTRIES, columns, exc) from exc
    finally:
        cursor.close()


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITERS_GUARD = threading.Lock()


def local_writer(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    """On SQLite, the threads of one process queue here for their short write transactions.

    SQLite has one writer at a time; a thread that finds the write lock taken sleeps in growing steps (1, 2,
    5, 10 … 100 ms) before it tries again, so under concurrent requests a few unlucky ones wait far longer
    than the writes take. Queued on a lock they are woken as soon as the writer before them commits. Take it
    only around a transaction of one's own (never while holding another write transaction open); other
    processes still wait on SQLite itself. A no-op on PostgreSQL.
    """
    lock = writer_lock(engine)
    return contextlib.nullcontext() if lock is None else lock


def writer_lock(engine: Engine) -> threading.RLock | None:
    """The lock :func:`local_writer` takes for ``engine`` (re-entrant, one per engine); None on PostgreSQL."""
    if engine.dialect.name != "sqlite":
        return None
    lock = _WRITERS.get(engine)
    if lock is None:
        with _WRITERS_GUARD:
            lock = _WRITERS.get(engine)
            if lock is None:
                lock = _WRITERS[engine] = threading.RLock()
    return lock


# Built once (statements are immutable) and run on the driver's cursor of the caller's connection, inside its
# transaction (``governance.sharing.driver``): an append's four or five statements then cost what the database
# takes to run them, not SQLAlchemy's per-execute work (cache key, execution context, result, events), which on
# SQLite is more than the statements themselves. Same SQL, same bound values, same errors (``DBAPIError``).
_HEAD_COLUMNS = (HEAD.c.tree_size, HEAD.c.frontier, HEAD.c.root_hash, HEAD.c.key_id, HEAD.c.tree_head_ms)
_BUMP_HEAD = DriverStatement(
    update(HEAD).where(HEAD.c.id == HEAD_ID).values(appends=HEAD.c.appends + 1).returning(*_HEAD_COLUMNS))


def _set_head(*columns: str) -> DriverStatement:
    """``UPDATE audit_head SET <columns>`` for the single head row, each value bound by the column's name."""
    return DriverStatement(update(HEAD).where(HEAD.c.id == HEAD_ID).values(
        {name: bindparam(name) for name in columns}))


def _insert(table: Any, *columns: str) -> DriverStatement:
    """``INSERT INTO table (<columns>)``, each value bound by the column's name (no RETURNING)."""
    return DriverStatement(insert(table).inline().values({name: bindparam(name) for name in columns}))


_SET_HEAD = _set_head("tree_size", "frontier", "root_hash")
"""Executed with the new values as parameters: tree size, frontier, root."""
_SET_SIGNED_HEAD = _set_head("tree_size", "frontier", "root_hash", "tree_head_ms")
"""… and the new signed tree head's time."""
_READ_HEAD = select(*_HEAD_COLUMNS).where(HEAD.c.id == HEAD_ID)
_INSERT_ENTRIES = _insert(ENTRY, *_ENTRY_COLUMNS)
_INSERT_NODES = _insert(NODE, "level", "idx", "hash")
_INSERT_TREE_HEAD = _insert(TREE_HEAD, "tree_size", "root_hash", "timestamp_ms", "key_id", "signature")


def read_head(conn: Connection) -> HeadState | None:
    row = conn.execute(_READ_HEAD).first()
    return None if row is None else _head_of(row)


def _head_of(row: Any) -> HeadState:
    size, frontier, root, key_id, tree_head_ms = row
    return HeadState(int(size), Frontier.from_bytes(int(size), bytes(frontier)), bytes(root), key_id,
                     int(tree_head_ms))


def latest_tree_head(conn: Connection) -> TreeHead | None:
    row = conn.execute(select(TREE_HEAD).order_by(TREE_HEAD.c.id.desc()).limit(1)).first()
    return None if row is None else tree_head_from_row(row._mapping)


def tree_head_from_row(row: Any) -> TreeHead:
    return TreeHead(int(row["tree_size"]), bytes(row["root_hash"]), int(row["timestamp_ms"]), row["key_id"],
                    bytes(row["signature"]))


def _millis(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, exactly (no float rounding)."""
    if moment.tzinfo is None:
        raise InvalidAuditEventError("the audit clock must return aware datetimes")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
