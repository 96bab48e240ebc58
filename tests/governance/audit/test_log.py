"""Appending, querying, proving and exporting, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, func, select

from governance.audit.bundle import export_bundle
from governance.audit.entries import AuditEvent
from governance.audit.errors import AuditKeyError, AuditRangeError, InvalidAuditEventError
from governance.audit.log import AuditLog, latest_tree_head
from governance.audit.merkle import EMPTY_ROOT, leaf_hash, root_of, verify_consistency, verify_inclusion
from governance.audit.proofs import consistency_proof, inclusion_proof, prefix_hashes, root_at
from governance.audit.query import EntryFilter, find_entries, get_entry, subject_report
from governance.audit.tables import ENTRY, NODE, TREE_HEAD
from governance.audit.verify import verify_bundle, verify_log, verify_since
from tests.conftest import FIXED_NOW
from tests.governance.audit.conftest import AppendBatches, request


def all_entries(engine: Engine) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(e) for (e,) in conn.execute(select(ENTRY.c.entry).order_by(ENTRY.c.seq))]


def test_appends_are_numbered_hashed_and_signed(audit_log: AuditLog, engine: Engine) -> None:
    first = audit_log.append([request(0), request(1), request(2)])
    second = audit_log.append([request(3)])
    assert (first.first_seq, first.count, second.first_seq) == (0, 3, 3)
    assert first.tree_head is not None and second.tree_head is not None
    assert (first.tree_head.tree_size, second.tree_head.tree_size) == (3, 4)
    stored = all_entries(engine)
    assert [orjson.loads(e)["seq"] for e in stored] == [0, 1, 2, 3]
    assert second.tree_head.root_hash == root_of([leaf_hash(e) for e in stored])
    assert second.tree_head.problem_with(audit_log.public_key) is None
    report = verify_log(engine, audit_log.public_key)
    assert (report.entries, report.tree_heads) == (4, 2)


def test_entries_carry_pseudonyms_and_references_never_raw_subjects(audit_log: AuditLog, engine: Engine) -> None:
    audit_log.append([request(2, subjects=["urn:ngsi-ld:Person:R-55812", "urn:ngsi-ld:Person:R-55812"])],
                     now=FIXED_NOW)
    (data,) = all_entries(engine)
    assert b"R-55812" not in data
    fields = orjson.loads(data)
    assert fields["subjects"] == [audit_log.pseudonymize("urn:ngsi-ld:Person:R-55812")]
    assert fields["time"] == "2026-11-20T12:00:00.000000Z"
    assert sorted(fields) == sorted(["v", "seq", "time", "actor", "action", "stage", "dataset", "purpose",
                                     "decision", "reasons", "policy_revision", "subjects", "refs"])


@pytest.mark.parametrize(("change", "message"), [
    ({"actor": ""}, "actor"),
    ({"stage": "everywhere"}, "stage"),
    ({"reasons": "no_agreement"}, "reasons"),
    ({"refs": {"n": 2**60}}, "canonical"),
    ({"decision": "x" * 65}, "decision"),
])
def test_invalid_events_are_refused_and_nothing_is_written(audit_log: AuditLog, engine: Engine,
                                                           change: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidAuditEventError, match=message):
        audit_log.append([request(0), request(1, **change)])
    assert all_entries(engine) == []
    assert verify_log(engine, audit_log.public_key).entries == 0


def test_tree_heads_on_demand_cover_the_empty_log_too(audit_log: AuditLog, engine: Engine) -> None:
    head = audit_log.sign_tree_head()
    assert (head.tree_size, head.root_hash) == (0, EMPTY_ROOT)
    audit_log.append([request(0)])
    again = audit_log.sign_tree_head()
    assert again.tree_size == 1 and again.timestamp_ms > head.timestamp_ms
    assert verify_log(engine, audit_log.public_key).tree_heads == 3


def test_a_writer_with_another_key_is_refused(audit_log: AuditLog, engine: Engine, tmp_path: Path) -> None:
    audit_log.append([request(0)])
    with pytest.raises(AuditKeyError, match="share its key"):
        AuditLog.open(engine, tmp_path / "another-data-dir")


def test_proofs_from_storage_verify_against_signed_roots(audit_log: AuditLog, engine: Engine,
                                                         fill: AppendBatches) -> None:
    fill([1, 15, 16, 17, 100, 3, 300])  # crosses stored subtree levels 4 and 8
    with engine.connect() as conn:
        heads = [(row.tree_size, bytes(row.root_hash)) for row in conn.execute(select(TREE_HEAD))]
        assert conn.execute(select(func.count()).select_from(NODE)).scalar() == 452 // 16 + 452 // 256
        for size, root in heads:
            for seq in {0, size // 3, size // 2, size - 1}:
                proof = inclusion_proof(conn, seq, size)
                verify_inclusion(seq, size, proof.leaf_hash, proof.hashes, root)
            assert root_at(conn, size) == root
            for old, old_root in heads:
                if old <= size:
                    verify_consistency(old, size, old_root, root, consistency_proof(conn, old, size).hashes)
        assert prefix_hashes(conn, 0) == []
        with pytest.raises(AuditRangeError):
            inclusion_proof(conn, 452, 452)
        with pytest.raises(AuditRangeError):
            consistency_proof(conn, 10, 453)


def test_queries_filter_by_column_dataset_subject_and_time(audit_log: AuditLog, engine: Engine) -> None:
    audit_log.append([request(n, time=FIXED_NOW + timedelta(minutes=n)) for n in range(30)])
    audit_log.append([AuditEvent(actor="adapter:care-hub", action="ingest.batch", stage="collection",
                                 decision="stored", refs={"datasets": ["care.alert", "care.observation"]})])
    with engine.connect() as conn:
        def seqs(**criteria: object) -> list[int]:
            return [e.seq for e in find_entries(conn, EntryFilter(**criteria))]  # type: ignore[arg-type]

        assert seqs(actor="department:energy") == list(range(0, 30, 3))
        assert seqs(decision="deny") == list(range(0, 30, 5))
        assert seqs(action="ingest.batch") == [30]
        assert seqs(dataset="care.observation") == [*range(2, 30, 3), 30]
        assert seqs(dataset="care.alert") == [30]
        assert seqs(dataset="care") == []
        pseudonym = audit_log.pseudonymize("urn:ngsi-ld:Person:R-1")
        assert seqs(subject=pseudonym) == [n for n in range(30) if n % 3 == 2 and n % 4 == 1]
        assert seqs(since=FIXED_NOW + timedelta(minutes=10), until=FIXED_NOW + timedelta(minutes=12)) == [10, 11]
        assert seqs(after_seq=25, limit=3) == [26, 27, 28]
        assert seqs(actor="department:energy", decision="allow", limit=2) == [3, 6]
        entry = get_entry(conn, 7)
        assert entry is not None and entry.fields["refs"] == {"n": 7, "rows": 21}
        report = subject_report(conn, pseudonym)
    assert report["events"] == 3
    assert report["by_actor"] == {"department:social-care": 3}
    assert report["by_purpose"] == {"purpose-1": 3}
    assert report["by_dataset"] == {"care.observation": 3}


def test_export_bundles_of_any_range_verify(audit_log: AuditLog, engine: Engine, fill: AppendBatches) -> None:
    fill([7, 20, 13])
    with engine.connect() as conn:
        for first, last in [(0, 39), (0, 0), (5, 17), (16, 31), (39, 39), (13, 30)]:
            bundle = export_bundle(conn, audit_log.public_key, first, last)
            report = verify_bundle(orjson.loads(orjson.dumps(bundle)), trusted_key=audit_log.public_key)
            assert (report.first_seq, report.last_seq, report.tree_head.tree_size) == (first, last, 40)
        with pytest.raises(AuditRangeError):
            export_bundle(conn, audit_log.public_key, 10, 40)


def test_a_checkpoint_is_consistent_with_the_grown_log(audit_log: AuditLog, engine: Engine,
                                                       fill: AppendBatches) -> None:
    fill([5, 12])
    with engine.connect() as conn:
        checkpoint = latest_tree_head(conn)
    assert checkpoint is not None
    fill([9, 30])
    report = verify_since(engine, audit_log.public_key, checkpoint)
    assert (report.checkpoint.tree_size, report.current.tree_size) == (17, 56)
    assert verify_since(engine, audit_log.public_key, report.current).proof == []


def test_tree_head_timestamps_never_go_backwards_with_a_lagging_clock(engine: Engine, data_dir: Path) -> None:
    fast = AuditLog.open(engine, data_dir, clock=lambda: FIXED_NOW + timedelta(hours=1))
    lagging = AuditLog.open(engine, data_dir, clock=lambda: FIXED_NOW)  # another worker, its clock an hour behind
    first = fast.append([request(0)]).tree_head
    second = lagging.append([request(1)]).tree_head
    assert first is not None and second is not None
    assert second.timestamp_ms == first.timestamp_ms
    assert verify_log(engine, fast.public_key).tree_heads == 2
