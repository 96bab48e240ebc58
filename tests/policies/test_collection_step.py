"""The collection policy step: one decision per (batch, scope), per-record consent, refusals that keep nothing."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from adapters.base import Adapter
from adapters.care_hub import CareHubAdapter
from adapters.streetlight_json import StreetlightJsonAdapter
from governance.catalog import default_catalog
from governance.config import Settings
from governance.ingest.batch import Batch, Record
from governance.ingest.pipeline import Pipeline
from governance.ingest.steps import ParseStep, ValidateStep
from governance.policy.bundle import PolicyBundle, load_folder
from governance.policy.collection import CollectionPolicyStep
from governance.policy.consent import ConsentGrant, InterimConsentRegistry
from governance.policy.embedded import EmbeddedEngine
from governance.policy.engine import FailClosedEngine
from governance.policy.model import DecisionRecord, Stage
from governance.policy.point import DecisionPoint
from governance.store import entities, quarantine
from tests.conftest import FIXED_NOW
from tests.governance.ingest.test_pipeline import SAMPLES, capture, care_event
from tests.policies.helpers import copy_policies, edit_json


class Clock:
    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self) -> Any:
        return self.now


def batch_of(adapter: Adapter, path: Path) -> Batch:
    messages = adapter.read(path, received_at=FIXED_NOW, max_bytes=256 * 1024)
    batch = Batch([Record(m, m.fingerprint(adapter.name)) for m in messages])
    for step in (ParseStep(256 * 1024), ValidateStep(default_catalog())):
        step.run(adapter, batch)
    return batch


def consent_for(*residents: int) -> InterimConsentRegistry:
    return InterimConsentRegistry(ConsentGrant(subject=f"urn:ngsi-ld:Person:R-{n:05d}", purpose="care.monitoring",
                                               given_at=FIXED_NOW - timedelta(days=30)) for n in residents)


def step_with(engine: Any, records: list[DecisionRecord], **kwargs: Any) -> CollectionPolicyStep:
    return CollectionPolicyStep(DecisionPoint(engine, records.append), clock=kwargs.pop("clock", Clock()), **kwargs)


def test_one_decision_per_scope_not_per_record(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    step = step_with(embedded, records)
    adapter = StreetlightJsonAdapter.from_config_file(SAMPLES / "streetlight-json" / "config.json")
    batch = batch_of(adapter, SAMPLES / "streetlight-json" / "messages.jsonl")
    entity_count = sum(len(r.entities) for r in batch.active())
    step.run(adapter, batch)
    scopes = {(r.input.dataset, r.input.fields) for r in records}
    assert len(records) == len(scopes) < entity_count
    assert all(not r.cached and r.stage is Stage.COLLECTION for r in records)
    assert sum(r.records or 0 for r in records) == entity_count
    evaluated = step.cache.misses
    step.run(adapter, batch_of(adapter, SAMPLES / "streetlight-json" / "messages.jsonl"))
    assert step.cache.misses == evaluated  # the second batch reuses every decision
    assert [r.cached for r in records[len(scopes):]] == [True] * len(scopes)


def test_decisions_expire_and_are_kept_per_revision(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    clock = Clock()
    records: list[DecisionRecord] = []
    step = step_with(embedded, records, clock=clock, cache_seconds=60)
    adapter = CareHubAdapter()
    path = capture(tmp_path / "care.jsonl", [care_event(1)])
    step.run(adapter, batch_of(adapter, path))
    step.run(adapter, batch_of(adapter, path))
    assert (step.cache.misses, step.cache.hits) == (1, 1)
    clock.now += timedelta(seconds=61)
    step.run(adapter, batch_of(adapter, path))
    assert step.cache.misses == 2
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "retention.json", lambda d: d["retention"]["classification"].update(public=1))
    step.point = DecisionPoint(EmbeddedEngine(load_folder(folder)), records.append)
    step.run(adapter, batch_of(adapter, path))
    assert step.cache.misses == 3 and records[-1].revision != records[0].revision


def test_care_observations_need_the_residents_consent(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    step = step_with(embedded, records, consent=consent_for(1, 3))
    adapter = CareHubAdapter()
    batch = batch_of(adapter, capture(tmp_path / "care.jsonl", [care_event(n) for n in (1, 2, 3)]))
    payload = batch.records[1].message.payload
    step.run(adapter, batch)
    assert [r.active for r in batch.records] == [True, False, True]
    refused = batch.records[1]
    assert refused.rejection is not None
    assert (refused.rejection.step, refused.rejection.reason) == ("policy", "no_legal_basis")
    assert "R-00002" not in refused.rejection.detail
    assert refused.message.payload == b""  # nothing of the refused personal data is kept
    assert refused.message.context["original_sha256"] == hashlib.sha256(payload).hexdigest()
    assert refused.message.context["truncated"] is True
    assert len(records) == 1 and records[0].records == 3


def test_no_consent_registry_means_no_care_observations(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    step = step_with(embedded, [])
    adapter = CareHubAdapter()
    batch = batch_of(adapter, capture(tmp_path / "care.jsonl", [care_event(1)]))
    step.run(adapter, batch)
    assert batch.records[0].rejection is not None and batch.records[0].rejection.reason == "no_legal_basis"


def test_alerts_flow_under_vital_interest_without_consent(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    step = step_with(embedded, records)
    adapter = CareHubAdapter()
    batch = batch_of(adapter, capture(tmp_path / "care.jsonl", [care_event(1, event="fall_detected", value=None)]))
    step.run(adapter, batch)
    assert batch.records[0].active
    assert records[0].decision.flags == ("vital_interest",)


def test_a_source_not_registered_for_care_data_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "sources.json", lambda d: d["sources"].pop("care-hub"))
    step = step_with(EmbeddedEngine(load_folder(folder)), [], consent=consent_for(1))
    adapter = CareHubAdapter()
    batch = batch_of(adapter, capture(tmp_path / "care.jsonl", [care_event(1)]))
    step.run(adapter, batch)
    rejection = batch.records[0].rejection
    assert rejection is not None and rejection.reason == "source_not_allowed"
    assert "policy revision" in rejection.detail and batch.records[0].message.payload == b""


def test_fields_a_source_may_not_send_are_dropped_and_noted(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "sources.json",
              lambda d: d["sources"]["streetlight-json"]["datasets"]["lighting.streetlight"].update(
                  drop=["powerState"]))
    step = step_with(EmbeddedEngine(load_folder(folder)), [])
    adapter = StreetlightJsonAdapter.from_config_file(SAMPLES / "streetlight-json" / "config.json")
    batch = batch_of(adapter, SAMPLES / "streetlight-json" / "messages.jsonl")
    step.run(adapter, batch)
    lamps = [e for r in batch.active() for e in r.entities if e.entity_type == "Streetlight"]
    assert lamps and all("powerState" not in e.data for e in lamps)
    assert any("powerState" in e.removed_fields for e in lamps)


def test_an_engine_failure_quarantines_with_the_payload_and_is_not_cached(bundle: PolicyBundle,
                                                                          tmp_path: Path) -> None:
    class Down(FailClosedEngine):
        name = "down"

        def _query(self, stage: Stage, document: dict[str, Any]) -> Any:
            raise ConnectionError("gone")

    step = step_with(Down(bundle), [])
    adapter = CareHubAdapter()
    path = capture(tmp_path / "care.jsonl", [care_event(1)])
    batch = batch_of(adapter, path)
    step.run(adapter, batch)
    rejection = batch.records[0].rejection
    assert rejection is not None and rejection.reason == "policy_engine_error"
    assert batch.records[0].message.payload != b""  # retriable once the engine is back
    step.run(adapter, batch_of(adapter, path))
    assert step.cache.hits == 0


def test_a_decision_that_cannot_be_recorded_is_a_deny(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    def failing_recorder(record: DecisionRecord) -> None:
        raise OSError("audit log unavailable")

    step = CollectionPolicyStep(DecisionPoint(embedded, failing_recorder), consent=consent_for(1), clock=Clock())
    adapter = CareHubAdapter()
    batch = batch_of(adapter, capture(tmp_path / "care.jsonl", [care_event(1)]))
    step.run(adapter, batch)
    assert batch.records[0].rejection is not None
    assert batch.records[0].rejection.reason == "policy_audit_unavailable"


def test_pipeline_with_the_policy_step_stores_consented_data_and_keeps_no_refused_payload(
        engine: Engine, settings: Settings, embedded: EmbeddedEngine, tmp_path: Path) -> None:
    records: list[DecisionRecord] = []
    policy = CollectionPolicyStep(DecisionPoint(embedded, records.append), consent=consent_for(1), clock=Clock())
    pipeline = Pipeline(engine, settings, steps=[ParseStep(settings.max_payload_bytes),
                                                 ValidateStep(default_catalog()), policy],
                        clock=lambda: FIXED_NOW)
    adapter = CareHubAdapter()
    path = capture(tmp_path / "care.jsonl", [care_event(1), care_event(2), care_event(3, event="fall_detected",
                                                                                        value=None)])
    report = pipeline.ingest(adapter, adapter.read(path, received_at=FIXED_NOW, max_bytes=settings.max_payload_bytes))
    assert (report.accepted, report.quarantined) == (2, 1) and report.by_reason == {"no_legal_basis": 1}
    assert entities.count_entities(engine) == 2
    [row] = quarantine.list_quarantined(engine, quarantine.QuarantineFilter())
    full = quarantine.get_quarantined(engine, row["pk"])
    assert (full["step"], full["payload"], full["payload_truncated"]) == ("policy", b"", True)
    assert {r.input.dataset for r in records} == {"care.observation", "care.alert"}


def test_fields_in_another_order_are_the_same_scope(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    # the step groups entities by (type, field names as they come) first; the scope is the set of names
    records: list[DecisionRecord] = []
    step = step_with(embedded, records)
    adapter = StreetlightJsonAdapter.from_config_file(SAMPLES / "streetlight-json" / "config.json")
    batch = batch_of(adapter, SAMPLES / "streetlight-json" / "messages.jsonl")
    lamps = [e for r in batch.active() for e in r.entities if e.entity_type == "Streetlight"]
    for lamp in lamps[::2]:
        lamp.data = dict(reversed(list(lamp.data.items())))
    step.run(adapter, batch)
    reference: list[DecisionRecord] = []
    step_with(embedded, reference).run(adapter, batch_of(adapter, SAMPLES / "streetlight-json" / "messages.jsonl"))
    assert [(r.input.dataset, set(r.input.fields), r.records) for r in records] == [
        (r.input.dataset, set(r.input.fields), r.records) for r in reference
    ]
