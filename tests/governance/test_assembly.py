"""The governed pipeline: collection policy, consent and the audit log around the bare pipeline."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from sqlalchemy import Engine

from adapters.care_hub import CareHubAdapter
from governance.assembly import build_pipeline
from governance.audit.query import EntryFilter, find_entries
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.ingest.retry import retry
from governance.ingest.sources import read_capture_lines
from governance.store import entities, ledger, quarantine
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import capture, care_event


def test_consent_decides_per_record_and_refused_payloads_are_not_kept(engine: Engine, settings: Settings,
                                                                       tmp_path: Path) -> None:
    clock = lambda: FIXED_NOW  # noqa: E731
    registry = ConsentRegistry.from_settings(settings, engine, clock=lambda: FIXED_NOW - timedelta(days=1))
    registry.grant({"subject_id": "urn:ngsi-ld:Person:R-00001", "controller": "social-care",
                    "purposes": ["care.monitoring"], "collection_method": "signed form"}, actor="officer:test")
    pipeline = build_pipeline(engine, settings, clock=clock)
    refused = care_event(2)
    path = capture(tmp_path / "care.jsonl", [care_event(1), refused,
                                              care_event(3, event="fall_detected", value=None)])
    adapter = CareHubAdapter()
    report = pipeline.ingest(adapter, read_capture_lines(path, received_at=FIXED_NOW, max_bytes=10_000))
    # R-00001 consented; R-00002 did not (observation refused); R-00003's fall alert is vital interest
    assert (report.accepted, report.quarantined) == (2, 1)
    assert report.by_reason == {"no_legal_basis": 1}
    assert entities.count_entities(engine) == 2

    (row,) = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    assert row["payload"] == b"" and row["payload_size"] == len(orjson.dumps(refused))
    assert b"R-00002" not in row["payload"] and "R-00002" not in row["detail"]
    with engine.connect() as conn:  # not remembered: a resend after consent is judged afresh
        assert ledger.known_fingerprints(conn, [row["fingerprint"]]) == {}
    again = retry(pipeline, [row])
    assert again.by_reason == {"payload_discarded": 1}

    with engine.connect() as conn:
        decisions = list(find_entries(conn, EntryFilter(action="policy.decision")))
    assert decisions, "every policy decision is audited"
    assert all(b"R-0000" not in entry.data for entry in decisions)


def test_withdrawal_stops_collection_one_second_later(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    now = [FIXED_NOW]
    registry = ConsentRegistry.from_settings(settings, engine, clock=lambda: now[0])
    granted = registry.grant({"subject_id": "urn:ngsi-ld:Person:R-00001", "controller": "social-care",
                              "purposes": ["care.monitoring"], "collection_method": "signed form"},
                             actor="officer:test")
    pipeline = build_pipeline(engine, settings, clock=lambda: now[0])
    adapter = CareHubAdapter()
    first = pipeline.ingest(adapter, read_capture_lines(capture(tmp_path / "a.jsonl", [care_event(1)]),
                                                        received_at=now[0], max_bytes=10_000))
    assert first.accepted == 1
    registry.withdraw(granted.consent.consent_id, actor="resident:R-00001")
    now[0] = FIXED_NOW + timedelta(seconds=1)
    later = capture(tmp_path / "b.jsonl", [care_event(1, at="2026-11-20T03:30:00+01:00")])
    second = pipeline.ingest(adapter, read_capture_lines(later, received_at=now[0], max_bytes=10_000))
    assert (second.accepted, second.quarantined) == (0, 1)
    assert entities.count_entities(engine) == 1
