"""Tampering with the stored log, the way an operator with database access could: each is detected and named.

The log is 40 entries in four appends, so signed tree heads exist at sizes 10, 20, 30 and 40 and stored
subtree roots cover entries 0..15 and 16..31.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, delete, insert, select, update

from governance.audit.bundle import export_bundle
from governance.audit.canonical import canonical_bytes
from governance.audit.errors import VerificationError
from governance.audit.keys import LogKeys
from governance.audit.log import AuditLog, latest_tree_head
from governance.audit.merkle import Frontier, leaf_hash
from governance.audit.tables import ENTRY, HEAD, NODE, TREE_HEAD
from governance.audit.treehead import TreeHead
from governance.audit.verify import verify_bundle, verify_log, verify_since
from tests.governance.audit.conftest import AppendBatches, request


@pytest.fixture
def log(audit_log: AuditLog, fill: AppendBatches) -> AuditLog:
    fill([10, 10, 10, 10])
    assert verify_log(audit_log.engine, audit_log.public_key).entries == 40
    return audit_log


def fails(log: AuditLog, message: str, seq: int | None = None) -> None:
    with pytest.raises(VerificationError, match=message) as caught:
        verify_log(log.engine, log.public_key)
    if seq is not None:
        assert caught.value.seq == seq, caught.value


def entry(engine: Engine, seq: int) -> dict[str, Any]:
    with engine.connect() as conn:
        value: dict[str, Any] = orjson.loads(conn.execute(select(ENTRY.c.entry).where(ENTRY.c.seq == seq)).scalar_one())
        return value


def write(engine: Engine, statement: Any) -> None:
    with engine.begin() as conn:
        conn.execute(statement)


def rewrite_entry(engine: Engine, seq: int, *, with_leaf: bool, **changes: Any) -> None:
    fields = entry(engine, seq) | changes
    data = canonical_bytes(fields)
    values: dict[str, Any] = {"entry": data}
    if with_leaf:
        values["leaf_hash"] = leaf_hash(data)
    write(engine, update(ENTRY).where(ENTRY.c.seq == seq).values(**values))


def rehash_everything(engine: Engine, resign_with: LogKeys | None = None) -> None:
    """What a careful attacker does after an edit: recompute leaf hashes, subtree roots and the head —
    and, holding the signing key, re-sign every tree head."""
    with engine.begin() as conn:
        rows = conn.execute(select(ENTRY.c.seq, ENTRY.c.entry).order_by(ENTRY.c.seq)).all()
        frontier = Frontier()
        nodes: list[dict[str, Any]] = []
        roots: dict[int, bytes] = {}
        for seq, data in rows:
            digest = leaf_hash(bytes(data))
            conn.execute(update(ENTRY).where(ENTRY.c.seq == seq).values(leaf_hash=digest))
            frontier.append(digest, lambda lv, ix, h: nodes.append({"level": lv, "idx": ix, "hash": h})
                            if lv % 4 == 0 else None)
            roots[frontier.size] = frontier.root()
        conn.execute(delete(NODE))
        if nodes:
            conn.execute(insert(NODE), nodes)
        conn.execute(update(HEAD).values(tree_size=frontier.size, frontier=frontier.to_bytes(),
                                         root_hash=frontier.root()))
        if resign_with is not None:
            for row in conn.execute(select(TREE_HEAD)).all():
                th = TreeHead.sign(resign_with, row.tree_size, roots[row.tree_size], row.timestamp_ms)
                conn.execute(update(TREE_HEAD).where(TREE_HEAD.c.id == row.id)
                             .values(root_hash=th.root_hash, signature=th.signature))


def checkpoint(log: AuditLog) -> TreeHead:
    with log.engine.connect() as conn:
        head = latest_tree_head(conn)
    assert head is not None
    return head


# --- entries -------------------------------------------------------------------------------------------


def test_an_edited_entry_is_named(log: AuditLog) -> None:
    rewrite_entry(log.engine, 12, with_leaf=False, decision="allow" if entry(log.engine, 12)["decision"] == "deny"
                  else "deny")
    fails(log, r"entry #12 does not match its leaf hash: its content was changed", seq=12)


@pytest.mark.parametrize("field", ["time", "actor", "action", "stage", "dataset", "purpose", "decision", "reasons",
                                   "policy_revision", "subjects", "refs", "v"])
def test_editing_any_field_of_an_entry_is_detected(log: AuditLog, field: str) -> None:
    original = entry(log.engine, 21)[field]
    replacement = {"time": "2026-11-20T11:00:00.000000Z", "reasons": ["edited"], "subjects": ["0" * 64],
                   "refs": {"n": 0}, "v": 2}.get(field, "edited")
    assert replacement != original
    rewrite_entry(log.engine, 21, with_leaf=False, **{field: replacement})
    fails(log, "entry #21 does not match its leaf hash", seq=21)


def test_an_edited_leaf_hash_is_named(log: AuditLog) -> None:
    write(log.engine, update(ENTRY).where(ENTRY.c.seq == 3).values(leaf_hash=b"\x00" * 32))
    fails(log, "entry #3 does not match its leaf hash", seq=3)


def test_an_entry_edited_with_its_leaf_hash_breaks_the_stored_subtree(log: AuditLog) -> None:
    rewrite_entry(log.engine, 12, with_leaf=True, purpose="something else")
    fails(log, r"entries #0..#15 do not hash to their stored subtree root", seq=0)


def test_an_entry_edited_with_every_derived_hash_breaks_the_signed_tree_head(log: AuditLog) -> None:
    rewrite_entry(log.engine, 35, with_leaf=True, purpose="hidden")
    fails(log, r"tree head #4 \(size 40\) does not match the stored entries: an entry in #30..#39", seq=30)
    rehash_everything(log.engine)  # subtree roots and head recomputed too: only the signatures are left
    rewrite_entry(log.engine, 12, with_leaf=True, purpose="hidden")
    rehash_everything(log.engine)
    fails(log, r"tree head #2 \(size 20\) does not match .* #10..#19", seq=10)


@pytest.mark.parametrize(("column", "value"), [("time", "2026-11-20T00:00:00.000000Z"), ("actor", "department:x"),
                                               ("action", "nothing"), ("decision", "allow")])
def test_an_edited_query_column_is_named(log: AuditLog, column: str, value: str) -> None:
    seq = 5  # a deny: every replacement differs
    write(log.engine, update(ENTRY).where(ENTRY.c.seq == seq).values(**{column: value}))
    fails(log, f"entry #{seq}: the {column} column says '{value}'", seq=seq)


def test_a_deleted_entry_is_named(log: AuditLog) -> None:
    write(log.engine, delete(ENTRY).where(ENTRY.c.seq == 17))
    fails(log, r"entry #17 is missing \(the next stored entry is #18\)", seq=17)


def test_two_swapped_entries_are_named(log: AuditLog) -> None:
    with log.engine.begin() as conn:
        rows = {s: (e, h) for s, e, h in conn.execute(select(ENTRY.c.seq, ENTRY.c.entry, ENTRY.c.leaf_hash)
                                                        .where(ENTRY.c.seq.in_([12, 13])))}
        for seq, other in ((12, 13), (13, 12)):
            conn.execute(update(ENTRY).where(ENTRY.c.seq == seq).values(entry=rows[other][0], leaf_hash=rows[other][1]))
    fails(log, r"the entry stored at #12 says it is #13: entries were moved or reordered", seq=12)


def test_a_node_edited_is_named(log: AuditLog) -> None:
    write(log.engine, update(NODE).where(NODE.c.level == 4, NODE.c.idx == 1).values(hash=b"\x01" * 32))
    fails(log, r"entries #16..#31 do not hash to their stored subtree root \(different\)", seq=16)


def test_an_entry_written_behind_the_log_is_named(log: AuditLog) -> None:
    fields = entry(log.engine, 39) | {"seq": 40}
    data = canonical_bytes(fields)
    write(log.engine, insert(ENTRY).values(seq=40, entry=data, leaf_hash=leaf_hash(data), time=fields["time"],
                                           actor=fields["actor"], action=fields["action"],
                                           decision=fields["decision"]))
    fails(log, "written behind the log's head")


# --- the tail ------------------------------------------------------------------------------------------


def test_a_truncated_tail_is_detected(log: AuditLog) -> None:
    write(log.engine, delete(ENTRY).where(ENTRY.c.seq >= 35))
    fails(log, r"tree head #4 covers 40 entries but only 35 are stored: .* truncated", seq=35)


def test_a_truncation_covered_up_is_caught_by_a_checkpoint(log: AuditLog) -> None:
    saved = checkpoint(log)
    write(log.engine, delete(ENTRY).where(ENTRY.c.seq >= 30))
    write(log.engine, delete(TREE_HEAD).where(TREE_HEAD.c.tree_size > 30))
    rehash_everything(log.engine)
    assert verify_log(log.engine, log.public_key).entries == 30  # consistent in itself…
    with pytest.raises(VerificationError, match=r"shrank from 40 entries .* to 30: it was truncated"):
        verify_since(log.engine, log.public_key, saved)  # …but not with what the auditor saw


def test_a_truncation_then_new_appends_is_caught(log: AuditLog, fill: AppendBatches) -> None:
    write(log.engine, delete(ENTRY).where(ENTRY.c.seq >= 30))
    rehash_everything(log.engine)
    fill([5])
    fails(log, r"tree head #5 has size 35 after #4 had 40: the log was cut back and written again \(a fork\)")
    fill([10])
    write(log.engine, delete(TREE_HEAD).where(TREE_HEAD.c.id == 5))
    fails(log, r"tree head #4 \(size 40\) does not match the stored entries: an entry in #30..#39", seq=30)


# --- tree heads and forks -------------------------------------------------------------------------------


def test_a_tree_head_signed_by_another_key_is_named(log: AuditLog, tmp_path: Path) -> None:
    intruder = LogKeys(Ed25519PrivateKey.generate(), b"k" * 32)
    row = checkpoint(log)
    forged = TreeHead.sign(intruder, row.tree_size, row.root_hash, row.timestamp_ms)
    write(log.engine, update(TREE_HEAD).where(TREE_HEAD.c.id == 4)
          .values(signature=forged.signature, key_id=forged.key_id))
    fails(log, r"tree head #4 \(size 40\) is signed by key .*, not the log key")
    write(log.engine, update(TREE_HEAD).where(TREE_HEAD.c.id == 4).values(key_id=log.key_id))
    fails(log, r"tree head #4 \(size 40\) has a signature that does not verify with the log key")


def test_history_rewritten_and_resigned_with_the_stolen_key_is_a_fork_for_a_checkpoint(log: AuditLog) -> None:
    saved = checkpoint(log)
    rewrite_entry(log.engine, 12, with_leaf=True, purpose="rewritten")
    rehash_everything(log.engine, resign_with=log.keys)
    assert verify_log(log.engine, log.public_key).entries == 40  # the thief's log is consistent in itself
    with pytest.raises(VerificationError, match="two different roots for the same tree size 40: a fork"):
        verify_since(log.engine, log.public_key, saved)
    log.append([request(99)])
    with pytest.raises(VerificationError, match=r"not an extension of the checkpoint.*rewritten"):
        verify_since(log.engine, log.public_key, saved)


def test_an_old_bundle_replayed_as_new_is_caught_by_a_checkpoint(log: AuditLog, fill: AppendBatches) -> None:
    with log.engine.connect() as conn:
        old = orjson.loads(orjson.dumps(export_bundle(conn, log.public_key, 0, 39)))
    verify_bundle(old, trusted_key=log.public_key)
    fill([5])
    saved = checkpoint(log)
    with pytest.raises(VerificationError, match=r"older than your checkpoint .*: an old bundle replayed"):
        verify_bundle(old, trusted_key=log.public_key, checkpoint=saved)
