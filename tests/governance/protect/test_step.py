"""The storage step in the governed pipeline: what the storage policy decides is what lands on disk."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from adapters.base import Adapter
from adapters.care_hub import CareHubAdapter
from adapters.traffic_counter import TrafficCounterAdapter
from governance.assembly import build_pipeline
from governance.audit.decisions import DecisionAuditor
from governance.audit.tables import AuditEntryRow, AuditHeadRow, AuditTreeHeadRow
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.ingest.batch import Batch, IngestReport, Record
from governance.ingest.message import ParsedEntity
from governance.ingest.pipeline import Pipeline
from governance.ingest.retry import message_of, retry
from governance.ingest.sources import read_capture_lines
from governance.protect.errors import DecryptionError
from governance.protect.fieldcrypt import FieldProtector, is_sealed
from governance.protect.quarantine import QuarantineVault
from governance.protect.step import ProtectStep
from governance.store import entities, quarantine
from governance.store.tables import EntityRecord
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import capture, care_event

SAMPLES = Path(__file__).resolve().parents[3] / "adapters" / "samples"
_ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]


def _consent(settings: Settings, engine: Engine, *residents: int) -> None:
    registry = ConsentRegistry.from_settings(settings, engine, clock=lambda: FIXED_NOW - timedelta(days=1))
    for n in residents:
        registry.grant({"subject_id": f"urn:ngsi-ld:Person:R-{n:05d}", "controller": "social-care",
                        "purposes": ["care.monitoring"], "collection_method": "signed form"}, actor="officer:test")


def _pipeline(engine: Engine, settings: Settings) -> Pipeline:
    return build_pipeline(engine, settings, clock=lambda: FIXED_NOW)


def _ingest(pipeline: Pipeline, adapter: Adapter, path: Path) -> IngestReport:
    return pipeline.ingest(adapter, read_capture_lines(path, received_at=FIXED_NOW, max_bytes=100_000))


def _rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(_ENTITY).order_by(_ENTITY.c.pk))]


def test_care_records_are_stored_pseudonymized_and_sealed(engine: Engine, settings: Settings,
                                                          tmp_path: Path) -> None:
    _consent(settings, engine, 1, 2)
    path = capture(tmp_path / "care.jsonl", [care_event(1, value=71), care_event(2, value=64),
                                              care_event(3, event="fall_detected", value=None)])
    report = _ingest(_pipeline(engine, settings), CareHubAdapter(), path)
    assert report.accepted == 3
    rows = _rows(engine)
    assert len(rows) == 3
    dump = orjson.dumps(rows, default=str).decode()
    for raw in ("R-00001", "R-00002", "R-00003", "H-0001", "H-0002", "H-0003"):
        assert raw not in dump, f"{raw} stored in clear"
    observations = [r for r in rows if r["entity_type"] == "ResidentObservation"]
    for row in rows:
        data = row["data"]
        assert isinstance(data, dict)
        assert row["subject"] == data["refResident"] and str(row["subject"]).startswith("psn:v1:")
        assert row["entity_id"] == data["id"] and str(data["id"]).startswith("psn:v1:")
        assert row["policy_revision"] and len(str(row["policy_revision"])) == 64
    for row in observations:
        data = row["data"]
        assert isinstance(data, dict)
        assert is_sealed(data["numValue"]) and is_sealed(data["observationType"])
        assert not is_sealed(data["unitCode"])  # not personal: stays readable
        # the observation time stays in the clear: the observed_at column holds it anyway
        assert isinstance(data["dateObserved"], str) and not is_sealed(data["dateObserved"])
        assert datetime.fromisoformat(data["dateObserved"]) == entities.as_utc(row["observed_at"])  # type: ignore[arg-type]
        observed = entities.as_utc(row["observed_at"])  # type: ignore[arg-type]
        assert observed is not None
        # care.observation raw records are kept 30 days from the observation (policies/data/retention.json)
        assert entities.as_utc(row["retain_until"]) == observed + timedelta(days=30)  # type: ignore[arg-type]
    protector = FieldProtector.from_settings(settings, engine)
    opened = protector.reveal([r["data"] for r in observations],  # type: ignore[misc]
                              fields={"numValue", "observationType"}, subject_property="refResident",
                              observed_at=[entities.as_utc(r["observed_at"]) for r in observations])  # type: ignore[arg-type]
    assert sorted(o["numValue"] for o in opened) == [64, 71]
    [alert] = [r for r in rows if r["entity_type"] == "Alert"]
    assert isinstance(alert["data"], dict) and not is_sealed(alert["data"]["dateIssued"])
    assert {o["observationType"] for o in opened} == {"heartRate"}


def test_non_personal_data_gets_a_retention_deadline_and_nothing_else(engine: Engine, settings: Settings,
                                                                       tmp_path: Path) -> None:
    sample = SAMPLES / "traffic-counter"
    adapter = TrafficCounterAdapter.from_config_file(sample / "config.json")
    report = _ingest(_pipeline(engine, settings), adapter, sample / "messages.jsonl")
    assert report.accepted > 0
    rows = _rows(engine)
    assert rows and all(r["subject"] is None for r in rows)
    for row in rows:
        data = row["data"]
        assert isinstance(data, dict) and not any(is_sealed(v) for v in data.values())
        assert str(data["id"]).startswith("urn:ngsi-ld:")
        days = 365 if row["dataset"] == "lighting.crowd-flow" else 1825  # per dataset, else classification
        observed = entities.as_utc(row["observed_at"])  # type: ignore[arg-type]
        assert observed is not None
        assert entities.as_utc(row["retain_until"]) == observed + timedelta(days=days)  # type: ignore[arg-type]


def test_nothing_more_is_stored_about_an_erased_subject(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    _consent(settings, engine, 1, 2)
    pipeline = _pipeline(engine, settings)
    _ingest(pipeline, CareHubAdapter(), capture(tmp_path / "a.jsonl", [care_event(1), care_event(2)]))
    FieldProtector.from_settings(settings, engine).shred("urn:ngsi-ld:Person:R-00001")
    later = capture(tmp_path / "b.jsonl", [care_event(1, at="2026-11-20T04:00:00+01:00"),
                                            care_event(2, at="2026-11-20T04:00:00+01:00")])
    report = _ingest(pipeline, CareHubAdapter(), later)
    assert (report.accepted, report.quarantined) == (1, 1)
    assert report.by_reason == {"subject_erased": 1}
    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["step"] == "storage" and row["payload"] == b""  # an erased person's payload is not kept
    assert "R-00001" not in row["detail"]


def test_quarantined_care_payloads_are_sealed_expire_and_stay_retryable(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    payload = care_event(9, value="x")
    pipeline = _pipeline(engine, settings)
    report = _ingest(pipeline, CareHubAdapter(), capture(tmp_path / "q.jsonl", [payload]))
    assert report.quarantined == 1
    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["sealed"] is True
    assert b"R-00009" not in row["payload"] and b"H-0009" not in row["payload"]
    assert entities.as_utc(row["retain_until"]) == FIXED_NOW + timedelta(days=settings.quarantine_retention_days)
    vault = pipeline.vault
    assert isinstance(vault, QuarantineVault)
    assert orjson.loads(message_of(row, vault).payload) == payload  # opens to exactly what arrived
    with pytest.raises(DecryptionError):  # bound to its fingerprint: cannot be moved to another row
        vault.open(row["payload"], "0" * 64)
    again = retry(pipeline, [row])
    assert row["reason"] == "wrong_type"
    assert again.quarantined == 1 and again.by_reason == {"wrong_type": 1}
    (after,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert after["attempts"] == 2 and after["sealed"] is True


def test_feeds_without_personal_data_are_not_sealed(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    adapter = TrafficCounterAdapter.from_config_file(SAMPLES / "traffic-counter" / "config.json")
    path = capture(tmp_path / "t.jsonl", [{"sensor": "TC-17", "from": "nonsense"}], topic="city/traffic/TC-17")
    _ingest(_pipeline(engine, settings), adapter, path)
    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["sealed"] is False and row["retain_until"] is None and b"TC-17" in row["payload"]


def test_an_entity_without_observation_time_is_kept_from_its_receive_time(engine: Engine, settings: Settings) -> None:
    """The deadline falls back to the receive time entity by entity, in a batch where the others have a time."""
    sample = SAMPLES / "traffic-counter"
    adapter = TrafficCounterAdapter.from_config_file(sample / "config.json")
    received = FIXED_NOW - timedelta(hours=3)
    messages = list(read_capture_lines(sample / "messages.jsonl", received_at=received, max_bytes=100_000))[:2]
    records = [Record(m, m.fingerprint(adapter.name), adapter.parse(m)) for m in messages]
    step = next(s for s in _pipeline(engine, settings).steps if isinstance(s, ProtectStep))
    first = records[0].entities[0]
    prop = step.catalog.get(first.entity_type).observed_at
    assert prop is not None
    first.data = {k: v for k, v in first.data.items() if k != prop}  # same type and fields otherwise
    step.run(adapter, Batch(records))
    pairs = [(e, s) for r in records for e, s in zip(r.entities, r.stored or [], strict=True)]
    assert len(pairs) == sum(len(r.entities) for r in records) > 1
    for entity, stored in pairs:
        days = 365 if step.catalog.get(entity.entity_type).dataset == "lighting.crowd-flow" else 1825
        assert stored.policy_revision
        if entity is first:
            received_at = records[0].message.received_at  # the capture's own, else the reader's
            assert stored.observed_at is None and stored.retain_until == received_at + timedelta(days=days)
        else:
            assert stored.observed_at is not None and stored.retain_until == stored.observed_at + timedelta(days=days)


def test_a_record_refused_by_one_group_is_left_out_of_its_others(engine: Engine, settings: Settings,
                                                                 tmp_path: Path) -> None:
    """A record whose entities fall into two groups, the first of which refuses it (an observation without its
    resident): its other entity is neither sealed nor given a row; a record alone in the second group is kept."""
    _consent(settings, engine, 1, 2)
    adapter, batch = _care_batch(tmp_path)
    both, alone = batch.records[0], batch.records[1]
    orphan = ParsedEntity({k: v for k, v in both.entities[0].data.items() if k != "refResident"})
    kept = both.entities[0]
    both.entities = [orphan, kept]  # the orphan's group (no subject property) comes first
    batch = Batch([both, alone])
    step = next(s for s in _pipeline(engine, settings).steps if isinstance(s, ProtectStep))
    step.run(adapter, batch)
    assert both.rejection is not None and both.rejection.step == "storage" and both.stored is None
    assert not is_sealed(kept.data["numValue"])  # left out of its group, as it was
    assert alone.rejection is None and alone.stored is not None
    assert is_sealed(alone.entities[0].data["numValue"]) and alone.stored[0].subject == \
        alone.entities[0].data["refResident"]


def _care_batch(tmp_path: Path) -> tuple[CareHubAdapter, Batch]:
    """Three care messages: two observations and a fall alert (two datasets, so two storage scopes)."""
    adapter = CareHubAdapter()
    path = capture(tmp_path / "care.jsonl", [care_event(1, value=71), care_event(2, value=64),
                                              care_event(3, event="fall_detected", value=None)])
    messages = list(read_capture_lines(path, received_at=FIXED_NOW, max_bytes=100_000))
    return adapter, Batch([Record(m, m.fingerprint(adapter.name), adapter.parse(m)) for m in messages])


def _audit_state(engine: Engine) -> tuple[int, int, list[dict[str, Any]]]:
    head, tree_head = AuditHeadRow.__table__, AuditTreeHeadRow.__table__  # type: ignore[attr-defined]
    entry = AuditEntryRow.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        appends = conn.execute(select(head.c.appends)).scalar()
        heads = conn.execute(select(func.count()).select_from(tree_head)).scalar_one()
        entries = [orjson.loads(e) for e in conn.execute(select(entry.c.entry).order_by(entry.c.seq)).scalars()]
    return int(appends or 0), int(heads), entries


def test_the_storage_decisions_of_a_batch_are_one_audit_append(engine: Engine, settings: Settings, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    adapter, batch = _care_batch(tmp_path)
    step = next(s for s in _pipeline(engine, settings).steps if isinstance(s, ProtectStep))
    appends, heads, before = _audit_state(engine)
    step.run(adapter, batch)
    assert all(r.active and r.stored for r in batch.records)
    appends_after, heads_after, entries = _audit_state(engine)
    assert (appends_after - appends, heads_after - heads) == (1, 1)  # one transaction, one signed tree head
    decisions = entries[len(before):]
    # one entry per scope, in the batch's order, as one append per scope wrote them
    assert [(e["action"], e["stage"], e["dataset"], e["decision"], e["refs"]["records"]) for e in decisions] == [
        ("policy.decision", "storage", "care.observation", "allow", 2),
        ("policy.decision", "storage", "care.alert", "allow", 1)]
    assert all(e["actor"] == "service:store" and e["policy_revision"] for e in decisions)
    # the same entries, field for field and in order, as the recorder taking them one by one (one append each)
    monkeypatch.delattr(DecisionAuditor, "record_many")
    (tmp_path / "again").mkdir()
    adapter, batch = _care_batch(tmp_path / "again")
    step = next(s for s in _pipeline(engine, settings).steps if isinstance(s, ProtectStep))
    step.run(adapter, batch)
    appends_again, heads_again, entries = _audit_state(engine)
    assert (appends_again - appends_after, heads_again - heads_after) == (2, 2)
    one_by_one = entries[len(before) + 2:]
    assert [{k: v for k, v in e.items() if k not in ("seq", "time")} for e in one_by_one] == \
        [{k: v for k, v in e.items() if k not in ("seq", "time")} for e in decisions]


class _FailingRecorder:
    def __call__(self, record: object, /) -> None:
        raise OSError("audit store unavailable")

    def record_many(self, records: object, /) -> None:
        raise OSError("audit store unavailable")


def test_a_batch_whose_decisions_cannot_be_audited_is_refused(engine: Engine, settings: Settings,
                                                              tmp_path: Path) -> None:
    adapter, batch = _care_batch(tmp_path)
    step = next(s for s in _pipeline(engine, settings).steps if isinstance(s, ProtectStep))
    step.point.on_decision = _FailingRecorder()
    step.run(adapter, batch)
    assert all(not r.active and r.rejection is not None and r.rejection.reason == "policy_audit_unavailable"
               and not r.stored for r in batch.records)
    assert _rows(engine) == []
