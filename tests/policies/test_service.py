"""Use and sharing decisions for the data API, and carrying them out on query results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from governance.policy.consent import ConsentGrant, InterimConsentRegistry
from governance.policy.embedded import EmbeddedEngine
from governance.policy.enforce import hmac_pseudonymizer
from governance.policy.errors import ObligationError, ObligationNotEnforcedError
from governance.policy.model import Actor, DecisionRecord, Stage
from governance.policy.point import DecisionPoint
from governance.policy.service import apply_decision, decide_use_or_sharing

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def observations() -> list[dict[str, object]]:
    return [{"id": f"o{i}", "type": "ResidentObservation", "refResident": f"urn:ngsi-ld:Person:R-{i}",
             "numValue": 70 + i, "observationType": "heartRate", "dateObserved": "2026-11-20T03:20:00Z"}
            for i in range(3)]


def test_a_department_on_its_own_entitlement_is_the_use_stage(embedded: EmbeddedEngine) -> None:
    records: list[DecisionRecord] = []
    outcome = decide_use_or_sharing(
        DecisionPoint(embedded, records.append),
        actor=Actor(kind="department", id="lamp-planner", department="energy"),
        purpose="energy.maintenance", dataset="lighting.streetlight", fields=["id", "status"], time=NOW)
    assert outcome.stage is Stage.USE and outcome.decision.allow
    assert [r.stage for r in records] == [Stage.USE]


def test_an_external_recipient_is_the_sharing_stage_with_the_agreement_obligations(embedded: EmbeddedEngine) -> None:
    outcome = decide_use_or_sharing(
        DecisionPoint(embedded), actor=Actor(kind="external", id="gp-practice-centro"), purpose="care.monitoring",
        dataset="care.observation", fields=["id", "type", "refResident", "numValue"], time=NOW,
        agreement="dsa-2026-004")
    assert outcome.stage is Stage.SHARING and outcome.decision.allow
    consent = InterimConsentRegistry([ConsentGrant(subject="urn:ngsi-ld:Person:R-1", purpose="care.monitoring",
                                                   given_at=NOW - timedelta(days=3))])
    result = apply_decision(outcome, observations(), consent=consent,
                            pseudonymizer=hmac_pseudonymizer({"gp-practice-centro": b"k" * 32}))
    assert result.kept == [1]
    assert result.records[0]["refResident"] != "urn:ngsi-ld:Person:R-1"
    assert "observationType" not in result.records[0] and "dateObserved" not in result.records[0]


def test_anonymized_sharing_leaves_aggregation_to_the_sharing_layer(embedded: EmbeddedEngine) -> None:
    outcome = decide_use_or_sharing(
        DecisionPoint(embedded), actor=Actor(kind="external", id="public-health-institute"),
        purpose="research.public-health", dataset="care.alert", fields=["subCategory", "dateIssued"], time=NOW,
        agreement="dsa-2026-002")
    assert outcome.decision.allow
    alerts = [{"subCategory": "fallenPatient", "dateIssued": f"2026-11-{d:02d}T03:00:00Z"} for d in range(1, 13)]
    result = apply_decision(outcome, alerts, consent=None, pseudonymizer=None)
    assert result.kept == []  # twelve different days: no group reaches k = 10
    with pytest.raises(ObligationNotEnforcedError):
        result.require_handled(set())
    result.require_handled({"aggregate_only"})


def test_break_glass_is_sharing_and_a_denied_request_releases_nothing(embedded: EmbeddedEngine) -> None:
    actor = Actor(kind="department", id="dispatch-9", department="emergency-services", roles=("clerk",))
    outcome = decide_use_or_sharing(DecisionPoint(embedded), actor=actor, purpose="emergency.response",
                                    dataset="care.alert", fields=["location"], time=NOW, break_glass=True)
    assert outcome.stage is Stage.SHARING and not outcome.decision.allow
    with pytest.raises(ObligationError):
        apply_decision(outcome, [{"location": None}], consent=None, pseudonymizer=None)
