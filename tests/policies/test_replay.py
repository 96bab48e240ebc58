"""Replaying recorded decisions against the revision that made them."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.policy.bundle import BundleStore, PolicyBundle, load_folder
from governance.policy.embedded import EmbeddedEngine
from governance.policy.errors import UnknownRevisionError
from governance.policy.model import Decision, DecisionRecord, Reason
from governance.policy.point import DecisionPoint
from governance.policy.replay import replay, replay_record
from tests.policies.helpers import copy_policies, edit_json, representative_inputs, sharing


@pytest.fixture
def store(bundle: PolicyBundle, tmp_path: Path) -> BundleStore:
    store = BundleStore(tmp_path / "policy-bundles")
    store.save(bundle)
    return store


def recorded(engine: EmbeddedEngine) -> list[DecisionRecord]:
    records: list[DecisionRecord] = []
    point = DecisionPoint(engine, records.append)
    for policy_input in representative_inputs():
        point.decide(policy_input)
    return records


def test_every_recorded_decision_replays_to_the_same_decision(embedded: EmbeddedEngine, store: BundleStore) -> None:
    for record in recorded(embedded):
        again = DecisionRecord.model_validate_json(record.model_dump_json())  # as read back from the log
        matches, decision = replay(again, store)
        assert matches, record
        assert decision == record.decision


def test_a_tampered_decision_does_not_match(embedded: EmbeddedEngine, store: BundleStore) -> None:
    record = recorded(embedded)[0]
    forged = record.model_copy(update={"decision": record.decision.model_copy(update={"obligations": ()})})
    matches, decision = replay(forged, store)
    assert not matches and decision == record.decision


def test_old_revisions_replay_after_the_policies_changed(embedded: EmbeddedEngine, store: BundleStore,
                                                         tmp_path: Path) -> None:
    lab = {"kind": "external", "id": "university-mobility-lab"}
    policy_input = sharing(lab, "research.mobility", "lighting.traffic-flow", ["intensity"], "dsa-2026-001")
    records: list[DecisionRecord] = []
    DecisionPoint(embedded, records.append).decide(policy_input)
    folder = copy_policies(tmp_path / "policies")
    edit_json(folder / "data" / "agreements.json", lambda d: d["agreements"].pop("dsa-2026-001"))
    newer = load_folder(folder)
    store.save(newer)
    assert not EmbeddedEngine(newer).decide(policy_input).allow  # today's policy says no
    assert replay(records[0], store) == (True, records[0].decision)  # the recorded revision said yes


def test_a_fail_closed_decision_is_reported_as_not_reproducible(embedded: EmbeddedEngine, store: BundleStore) -> None:
    record = recorded(embedded)[0]
    failed = record.model_copy(update={"decision": Decision.fail_closed(record.revision, "timeout", "slow")})
    result = replay_record(failed, store)
    assert not result.matches and "fail-closed timeout" in result.note
    assert result.replayed == record.decision


def test_replay_needs_the_recorded_revision(embedded: EmbeddedEngine, tmp_path: Path) -> None:
    record = recorded(embedded)[0]
    with pytest.raises(UnknownRevisionError):
        replay(record, BundleStore(tmp_path / "empty"))


def test_decision_records_carry_the_revision_and_engine(embedded: EmbeddedEngine) -> None:
    record = recorded(embedded)[0]
    assert record.revision == embedded.revision == record.decision.revision
    assert record.engine == "embedded"
    assert Reason(code="collected", detail="source streetlight-json feeds lighting.streetlight for "
                                                "energy.management") in record.decision.reasons
