"""The ingest pipeline writes its audit trail in each batch's transaction: one entry per batch and per reason."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Connection, Engine, func, select

from adapters.base import Adapter
from adapters.care_hub import CareHubAdapter
from governance.audit.log import AuditLog
from governance.audit.observer import AuditObserver
from governance.audit.tables import ENTRY
from governance.audit.verify import verify_log
from governance.config import Settings
from governance.ingest.batch import Batch, IngestReport
from governance.ingest.pipeline import Pipeline
from governance.store.tables import IngestMessage
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import capture, care_event

LEDGER = IngestMessage.__table__  # type: ignore[attr-defined]


def entries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [orjson.loads(e) for (e,) in conn.execute(select(ENTRY.c.entry).order_by(ENTRY.c.seq))]


def raw_entries(engine: Engine) -> bytes:
    with engine.connect() as conn:
        return b"\n".join(bytes(e) for (e,) in conn.execute(select(ENTRY.c.entry)))


@pytest.fixture
def pipeline(engine: Engine, settings: Settings, audit_log: AuditLog) -> Pipeline:
    fast = settings.model_copy(update={"quality_checks": False})
    return Pipeline(engine, fast, clock=lambda: FIXED_NOW, observers=[AuditObserver(audit_log)])


def ingest(pipeline: Pipeline, path: Path) -> IngestReport:
    adapter = CareHubAdapter()
    return pipeline.ingest(adapter, adapter.read(path, received_at=FIXED_NOW, max_bytes=4096))


def test_a_batch_and_each_quarantine_reason_get_one_entry(pipeline: Pipeline, engine: Engine, tmp_path: Path,
                                                          audit_log: AuditLog) -> None:
    path = capture(tmp_path / "care.jsonl", [
        care_event(1), care_event(2), care_event(3, event="fall_detected", value=None),
        care_event(4, value="72"), care_event(5, value="73"),
        care_event(6, at="2026-11-20T03:00:00"),
        b"\xff\xfe not utf-8",
    ])
    report = ingest(pipeline, path)
    assert (report.accepted, report.quarantined) == (3, 4)
    batch, *quarantine = entries(engine)
    assert batch["action"] == "ingest.batch" and batch["actor"] == "adapter:care-hub"
    assert (batch["stage"], batch["decision"]) == ("collection", "partial")
    assert batch["time"] == "2026-11-20T12:00:00.000000Z"
    assert batch["reasons"] == ["not_utf8", "timestamp_without_zone", "wrong_type"]
    refs = batch["refs"]
    counts = (refs["read"], refs["accepted"], refs["quarantined"], refs["duplicates"], refs["entities"])
    assert counts == (7, 3, 4, 0, 3)
    assert refs["by_type"] == [{"type": "Alert", "dataset": "care.alert", "count": 1},
                               {"type": "ResidentObservation", "dataset": "care.observation", "count": 2}]
    assert refs["datasets"] == ["care.alert", "care.observation"] and batch["dataset"] is None
    assert batch["subjects"] == sorted(audit_log.pseudonymize(f"urn:ngsi-ld:Person:R-{n:05d}") for n in (1, 2, 3))
    assert [(q["reasons"], q["refs"]["step"], q["refs"]["count"]) for q in quarantine] == [
        (["not_utf8"], "read", 1), (["timestamp_without_zone"], "parse", 1), (["wrong_type"], "parse", 2)]
    with engine.connect() as conn:
        fingerprints = sorted(fp for (fp,) in conn.execute(select(LEDGER.c.fingerprint)))
        stored = sorted(fp for (fp,) in conn.execute(select(LEDGER.c.fingerprint).where(LEDGER.c.status == "stored")))
    assert refs["messages_sha256"] == hashlib.sha256("".join(f + "\n" for f in fingerprints).encode()).hexdigest()
    assert refs["stored_sha256"] == hashlib.sha256("".join(f + "\n" for f in stored).encode()).hexdigest()
    assert verify_log(engine, audit_log.public_key).tree_heads == 1


def test_no_payload_or_personal_value_reaches_the_log(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    path = capture(tmp_path / "care.jsonl", [care_event(n, value=91 + n) for n in range(1, 6)]
                   + [care_event(7, event="teleport")])
    ingest(pipeline, path)
    data = raw_entries(engine)
    values = [f":{91 + n}{end}".encode() for n in range(1, 6) for end in ",}]"]  # as JSON numbers
    for secret in (b"R-0000", b"H-0001", b"heart", b"teleport", b"Person", b"numValue", *values):
        assert secret not in data, secret


def test_repeated_batches_are_logged_as_duplicates(pipeline: Pipeline, engine: Engine, tmp_path: Path) -> None:
    path = capture(tmp_path / "care.jsonl", [care_event(1), care_event(2)])
    ingest(pipeline, path)
    ingest(pipeline, path)
    assert [(e["action"], e["decision"]) for e in entries(engine)] == [("ingest.batch", "stored"),
                                                                       ("ingest.batch", "duplicate")]


class FailingObserver:
    """A later observer that fails: the batch, its ledger rows and its audit entries must all roll back."""

    def batch_committed(self, conn: Connection, adapter: Adapter, batch: Batch, report: IngestReport,
                        now: datetime) -> None:
        raise RuntimeError("disk full")


def test_audit_entries_commit_or_roll_back_with_their_batch(engine: Engine, settings: Settings,
                                                            audit_log: AuditLog, tmp_path: Path) -> None:
    fast = settings.model_copy(update={"quality_checks": False})
    failing = Pipeline(engine, fast, clock=lambda: FIXED_NOW, observers=[AuditObserver(audit_log), FailingObserver()])
    path = capture(tmp_path / "care.jsonl", [care_event(1)])
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(failing, path)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ENTRY)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(LEDGER)).scalar() == 0
    assert verify_log(engine, audit_log.public_key).entries == 0


def test_fingerprint_digests_follow_their_documented_recipe() -> None:
    """SHA-256 over the sorted fingerprints, each followed by a newline: what an auditor recomputes from the
    ledger with any tool (here: the bytes written out by hand)."""
    from governance.audit.observer import fingerprints_digest

    fingerprints = [hashlib.sha256(str(n).encode()).hexdigest() for n in (3, 1, 2)]
    by_hand = b"".join(f.encode("ascii") + b"\n" for f in sorted(fingerprints))
    assert fingerprints_digest(fingerprints) == hashlib.sha256(by_hand).hexdigest()
    assert fingerprints_digest(iter(fingerprints[:1])) == hashlib.sha256(fingerprints[0].encode() + b"\n").hexdigest()
    assert fingerprints_digest([]) == hashlib.sha256(b"").hexdigest()
