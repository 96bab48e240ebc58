"""The consent registry on SQLite and PostgreSQL: grants, withdrawal, renewal, history, the policy lookup."""

from __future__ import annotations

import inspect
import json
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import pytest
from sqlalchemy import Engine, event, select, text

from governance.consent.errors import (
    ConsentConflictError,
    ConsentNotFoundError,
    ConsentStateError,
    InvalidConsentError,
)
from governance.consent.registry import ConsentRegistry
from governance.consent.tables import ConsentEvent, ConsentRecord
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock

RESIDENT = "urn:ngsi-ld:Person:R-55812"
CONSENT = ConsentRecord.__table__  # type: ignore[attr-defined]
EVENTS = ConsentEvent.__table__  # type: ignore[attr-defined]


@runtime_checkable
class ConsentLookup(Protocol):
    """The shape the policy layer asks for."""

    def has_consent(self, subject_id: str, purpose: str, at: datetime) -> bool: ...


def grant(registry: ConsentRegistry, subject: str = RESIDENT, **changes: Any) -> Any:
    request = {
        "subject_id": subject, "controller": "City Social Care", "purposes": ["care.alerting", "care.wellbeing"],
        "recipients": ["dept:emergency"], "legal_basis": "explicit-consent", "collection_method": "paper form",
        "special_categories": ["health"], "valid_until": FIXED_NOW + timedelta(days=365), **changes,
    }
    return registry.grant(request, actor="clerk:anna")


def test_the_registry_is_a_consent_lookup(registry: ConsentRegistry) -> None:
    assert isinstance(registry, ConsentLookup)
    params = list(inspect.signature(registry.has_consent).parameters)
    assert params[:3] == ["subject_id", "purpose", "at"]
    policy = pytest.importorskip("governance.policy.consent")  # the policy layer's own protocol, when present
    assert isinstance(registry, policy.BatchConsentLookup)


def test_a_grant_stores_the_pseudonym_only(engine: Engine, registry: ConsentRegistry) -> None:
    result = grant(registry)
    assert result.consent.subject == registry.pseudonyms.of(RESIDENT)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(select(CONSENT))]
        events = [dict(r._mapping) for r in conn.execute(select(EVENTS))]
    dumped = json.dumps([rows, events], default=str)
    assert "R-55812" not in dumped
    assert rows[0]["subject"] == result.consent.subject and events[0]["event"] == "grant"
    assert events[0]["receipt"] == result.receipt


def test_consent_covers_its_purposes_recipients_and_period(registry: ConsentRegistry) -> None:
    grant(registry, valid_from=FIXED_NOW + timedelta(hours=1), valid_until=FIXED_NOW + timedelta(days=30))
    inside = FIXED_NOW + timedelta(days=1)
    assert registry.has_consent(RESIDENT, "care.alerting", inside)
    assert registry.has_consent(RESIDENT, "care.wellbeing", inside)
    assert not registry.has_consent(RESIDENT, "research", inside)
    assert not registry.has_consent("urn:ngsi-ld:Person:R-1", "care.alerting", inside)
    assert not registry.has_consent(RESIDENT, "care.alerting", FIXED_NOW + timedelta(minutes=59))  # not yet
    assert not registry.has_consent(RESIDENT, "care.alerting", FIXED_NOW + timedelta(days=30))  # ended
    assert registry.has_consent(RESIDENT, "care.alerting", inside, recipient="dept:emergency")
    assert not registry.has_consent(RESIDENT, "care.alerting", inside, recipient="dept:energy")
    pseudonym = registry.pseudonyms.of(RESIDENT)
    assert registry.has_consent(pseudonym, "care.alerting", inside)  # later stages hold pseudonyms


def test_withdrawal_is_effective_immediately_and_recorded(registry: ConsentRegistry, clock: Clock) -> None:
    consent_id = grant(registry).consent.consent_id
    clock.advance(hours=2)
    assert registry.has_consent(RESIDENT, "care.alerting", clock.now)
    withdrawn_at = clock.advance(minutes=5)
    result = registry.withdraw(consent_id, actor="resident", reason="moved to a care home")
    assert result.consent.status == "withdrawn" and result.consent.withdrawn_at == withdrawn_at
    one_second_later = withdrawn_at + timedelta(seconds=1)
    for stage_purpose in ("care.alerting", "care.wellbeing"):
        assert not registry.has_consent(RESIDENT, stage_purpose, one_second_later)
        assert not registry.has_consent(RESIDENT, stage_purpose, one_second_later, recipient="dept:emergency")
    assert not registry.has_consent(RESIDENT, "care.alerting", withdrawn_at)  # from the instant itself
    assert registry.has_consent(RESIDENT, "care.alerting", withdrawn_at - timedelta(seconds=1))  # history replays
    history = registry.get(consent_id).history
    assert [(e.seq, e.event, e.status) for e in history] == [(1, "grant", "active"), (2, "withdraw", "withdrawn")]
    assert history[1].actor == "resident" and history[1].reason == "moved to a care home"
    assert history[1].receipt_id == result.receipt_id
    assert registry.verify_receipt(result.receipt)["citygov"]["status"] == "withdrawn"
    with pytest.raises(ConsentStateError):
        registry.withdraw(consent_id, actor="resident")
    with pytest.raises(ConsentStateError):
        registry.renew(consent_id, valid_until=None, actor="clerk")


def test_renewal_extends_from_when_it_is_recorded(registry: ConsentRegistry, clock: Clock) -> None:
    consent_id = grant(registry, valid_until=FIXED_NOW + timedelta(days=10)).consent.consent_id
    lapsed = FIXED_NOW + timedelta(days=12)
    clock.now = FIXED_NOW + timedelta(days=15)
    assert not registry.has_consent(RESIDENT, "care.alerting", clock.now)
    registry.renew(consent_id, valid_until=FIXED_NOW + timedelta(days=100), actor="clerk", reason="annual review")
    assert registry.has_consent(RESIDENT, "care.alerting", clock.now + timedelta(seconds=1))
    assert not registry.has_consent(RESIDENT, "care.alerting", lapsed)  # the gap stays a gap when replayed
    assert registry.get(consent_id).valid_until == FIXED_NOW + timedelta(days=100)
    registry.renew(consent_id, valid_until=None, actor="clerk")
    assert registry.has_consent(RESIDENT, "care.alerting", FIXED_NOW + timedelta(days=1000))
    with pytest.raises(InvalidConsentError):
        registry.renew(consent_id, valid_until=clock.now - timedelta(days=1), actor="clerk")


def test_history_is_append_only(engine: Engine, registry: ConsentRegistry, clock: Clock) -> None:
    consent_id = grant(registry).consent.consent_id
    with engine.connect() as conn:
        first = [dict(r._mapping) for r in conn.execute(select(EVENTS).order_by(EVENTS.c.seq))]
    clock.advance(days=1)
    registry.renew(consent_id, valid_until=FIXED_NOW + timedelta(days=400), actor="clerk")
    clock.advance(days=1)
    registry.withdraw(consent_id, actor="resident")
    with engine.connect() as conn:
        after = [dict(r._mapping) for r in conn.execute(select(EVENTS).order_by(EVENTS.c.seq))]
    assert after[:1] == first
    assert [e["seq"] for e in after] == [1, 2, 3] and [e["event"] for e in after] == ["grant", "renew", "withdraw"]
    assert len({e["receipt_id"] for e in after}) == 3


def test_a_change_based_on_a_stale_state_is_refused(registry: ConsentRegistry, clock: Clock) -> None:
    consent_id = grant(registry).consent.consent_id
    stale = registry.get(consent_id, history=False)
    registry.withdraw(consent_id, actor="resident")
    with pytest.raises(ConsentConflictError):
        registry._change(stale, "renew", clock.now, "clerk", None, {"valid_until": None})
    assert [e.event for e in registry.get(consent_id).history] == ["grant", "withdraw"]


def test_batch_lookup_returns_the_ids_as_given(engine: Engine, registry: ConsentRegistry) -> None:
    registry.lookup_chunk = 7  # several chunks, without writing thousands of consents
    consented = [f"urn:ngsi-ld:Person:R-{n}" for n in range(0, 60, 2)]
    for subject in consented:
        registry.grant({"subject_id": subject, "controller": "c", "purposes": ["care.alerting"],
                        "collection_method": "app"}, actor="clerk")
    everyone = [f"urn:ngsi-ld:Person:R-{n}" for n in range(60)]
    at = FIXED_NOW + timedelta(seconds=1)
    assert registry.consents_for(everyone, "care.alerting", at) == set(consented)
    assert registry.consents_for(everyone, "research", at) == set()
    registry.lookup_chunk = 500
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert registry.consents_for(everyone, "care.alerting", at) == set(consented)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(seen) == 1  # one query for the whole batch
    mixed = [consented[0], registry.pseudonyms.of(consented[1]), everyone[1]]
    assert registry.consents_for(mixed, "care.alerting", at) == {consented[0], registry.pseudonyms.of(consented[1])}


def test_lookups_fail_closed(engine: Engine, registry: ConsentRegistry, caplog: pytest.LogCaptureFixture) -> None:
    grant(registry)
    at = FIXED_NOW + timedelta(days=1)
    assert registry.has_consent(RESIDENT, "care.alerting", at)
    assert not registry.has_consent(RESIDENT, "care.alerting", at.replace(tzinfo=None))  # naive time
    assert not registry.has_consent("", "care.alerting", at)  # not an id
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE consent_event"))
    assert not registry.has_consent(RESIDENT, "care.alerting", at)
    assert registry.consents_for([RESIDENT], "care.alerting", at) == set()
    assert "consent lookup failed" in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"purposes": []}, "purposes"),
        ({"purposes": ["Care Alerting"]}, "purposes"),
        ({"legal_basis": "consent"}, "explicit-consent"),
        ({"valid_from": FIXED_NOW + timedelta(days=2), "valid_until": FIXED_NOW + timedelta(days=1)}, "valid_until"),
        ({"valid_until": FIXED_NOW - timedelta(days=1)}, "valid_until"),
        ({"valid_until": datetime(2027, 1, 1)}, "time zone"),
        ({"controller": " "}, "controller"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_invalid_grants_are_refused_with_a_reason(registry: ConsentRegistry, changes: dict[str, Any],
                                                  message: str) -> None:
    with pytest.raises(InvalidConsentError, match=message):
        grant(registry, **changes)


def test_every_change_names_its_actor_and_unknown_consents_are_not_found(registry: ConsentRegistry) -> None:
    with pytest.raises(InvalidConsentError, match="actor"):
        registry.grant({"subject_id": RESIDENT, "controller": "c", "purposes": ["p"], "collection_method": "m"},
                       actor=" ")
    with pytest.raises(ConsentNotFoundError):
        registry.withdraw("nope", actor="x")


def test_find_filters_by_subject_status_and_purpose(registry: ConsentRegistry) -> None:
    first = grant(registry).consent.consent_id
    grant(registry, purposes=["research"], special_categories=[], legal_basis="consent")
    grant(registry, subject="urn:ngsi-ld:Person:R-2")
    registry.withdraw(first, actor="resident")
    assert len(registry.find(subject_id=RESIDENT)) == 2
    assert len(registry.find(subject_id=registry.pseudonyms.of(RESIDENT))) == 2
    assert [v.purposes for v in registry.find(subject_id=RESIDENT, status="active")] == [["research"]]
    assert len(registry.find(purpose="care.alerting")) == 2
    assert len(registry.find(status="withdrawn")) == 1
    assert len(registry.find(limit=1)) == 1
