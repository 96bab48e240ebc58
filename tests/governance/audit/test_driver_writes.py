"""Appends on the driver's cursor (``governance.sharing.driver`` under ``AuditLog._append``), on SQLite and
PostgreSQL: the rows are those SQLAlchemy's own execution wrote, the log verifies, an append inside a caller's
transaction commits or rolls back with it, and a write the database refuses leaves nothing behind."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog, latest_tree_head, read_head
from governance.audit.tables import ENTRY, NODE, TREE_HEAD
from governance.audit.verify import verify_log
from tests.governance.audit.conftest import request


def _counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return tuple(int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[return-value]
                     for table in (ENTRY, NODE, TREE_HEAD))


def test_driver_written_entries_nodes_and_tree_heads_verify(audit_log: AuditLog, engine: Engine) -> None:
    """Single entries, batches and a ``then`` append, past several stored subtree roots (every 16 leaves)."""
    for n in range(20):
        audit_log.append([request(n)])
    audit_log.append([request(n) for n in range(20, 37)])
    with engine.begin() as conn:
        result = audit_log.append([request(37)], conn=conn,
                                  then=lambda seq: [AuditEvent(actor="department:transport", action="data.request",
                                                               refs={"decision_id": str(seq - 1)})])
    assert (result.first_seq, result.count) == (37, 2)
    audit_log.append([], sign=False)  # the head moves without a tree head
    entries, nodes, tree_heads = _counts(engine)
    assert entries == 39 and nodes >= 2 and tree_heads == 22
    report = verify_log(engine, audit_log.public_key)
    assert report.entries == 39
    with engine.connect() as conn:
        head = read_head(conn)
        latest = latest_tree_head(conn)
        stored = [(int(seq), bytes(entry)) for seq, entry in conn.execute(select(ENTRY.c.seq, ENTRY.c.entry)
                                                                          .order_by(ENTRY.c.seq))]
    assert head is not None and latest is not None
    assert head.tree_size == latest.tree_size == 39 and head.root_hash == latest.root_hash
    assert latest.problem_with(audit_log.public_key) is None
    assert [seq for seq, _ in stored] == list(range(39))
    assert all(isinstance(data, bytes) and data.startswith(b"{") for _, data in stored)


def test_an_append_in_a_rolled_back_transaction_leaves_nothing(audit_log: AuditLog, engine: Engine) -> None:
    audit_log.append([request(0)])
    before = _counts(engine)

    def append_then_fail() -> None:
        with engine.begin() as conn:
            audit_log.append([request(1), request(2)], conn=conn)
            raise RuntimeError("the caller's transaction fails after the append")

    with pytest.raises(RuntimeError):
        append_then_fail()
    assert _counts(engine) == before
    assert audit_log.append([request(3)]).first_seq == 1  # the rolled-back numbers are used again
    assert verify_log(engine, audit_log.public_key).entries == 2


def test_a_refused_entry_write_raises_a_sqlalchemy_error_and_leaves_nothing(audit_log: AuditLog,
                                                                            engine: Engine) -> None:
    audit_log.append([request(0)])
    before = _counts(engine)
    head = audit_log.head()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("CREATE FUNCTION refuse_audit_entry() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                              "RAISE EXCEPTION 'entries refused'; END $$"))
            conn.execute(text("CREATE TRIGGER refuse_audit_entry BEFORE INSERT ON audit_entry FOR EACH ROW "
                              "EXECUTE FUNCTION refuse_audit_entry()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse_audit_entry BEFORE INSERT ON audit_entry "
                              "BEGIN SELECT RAISE(ABORT, 'entries refused'); END"))
    try:
        for batch in ([request(1)], [request(2), request(3)]):  # a single row, and executemany
            with pytest.raises(DBAPIError, match="entries refused"):
                audit_log.append(batch)
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_audit_entry" + (
                " ON audit_entry" if conn.dialect.name == "postgresql" else "")))
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP FUNCTION refuse_audit_entry()"))
    after = audit_log.head()
    assert _counts(engine) == before and head is not None and after is not None
    assert (after.tree_size, after.root_hash, after.tree_head_ms) == (head.tree_size, head.root_hash, head.tree_head_ms)
    assert audit_log.append([request(4)]).first_seq == 1
    assert verify_log(engine, audit_log.public_key).entries == 2
