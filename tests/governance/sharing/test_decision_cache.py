"""Reused decisions of the data API: keyed on the whole input but its time, ended by agreement periods, TTL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from governance.audit.decisions import record_from_entry
from governance.audit.query import get_entry
from governance.config import Settings
from governance.errors import AccessDeniedError
from governance.policy.bundle import BundleStore
from governance.policy.model import Decision, PolicyInput
from governance.policy.replay import replay_record
from governance.sharing.decisions import CachingDecisionPoint, agreement_times
from governance.sharing.query import QueryRequest, QueryService, Requester
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import store, traffic

TRANSPORT = Requester("transport", "department")
LAB = Requester("university-mobility-lab", "external")
PLANNING = QueryRequest.model_validate({"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
                                        "fields": ["id", "type", "intensity", "location"]})
MOBILITY = QueryRequest.model_validate({"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                                        "fields": ["id", "type", "location", "intensity"],
                                        "agreement": "dsa-2026-001"})


def recorded(db: Engine, decision_id: str) -> Any:
    with db.connect() as conn:
        entry = get_entry(conn, int(decision_id))
    assert entry is not None
    return record_from_entry(entry.fields)


def point_of(service: QueryService) -> CachingDecisionPoint:
    point = service.policy.point()
    assert isinstance(point, CachingDecisionPoint)
    return point


def test_a_repeated_request_reuses_the_decision_and_each_request_is_recorded(
        service: QueryService, db: Engine, clock: Clock, settings: Settings) -> None:
    store(db, traffic(3))
    first = service.run(TRANSPORT, PLANNING)
    clock.now = FIXED_NOW + timedelta(seconds=30)
    second = service.run(TRANSPORT, PLANNING)
    assert first.decision_id != second.decision_id and first.records == second.records
    assert recorded(db, first.decision_id).cached is False
    again = recorded(db, second.decision_id)
    assert again.cached is True
    assert again.input.context.time == clock.now  # the request's own input, not the cached one
    assert replay_record(again, BundleStore.for_settings(settings)).matches  # and it replays to the same decision
    assert point_of(service).hits == 1


def test_anything_else_in_the_input_is_decided_afresh(service: QueryService, db: Engine) -> None:
    store(db, traffic(3))
    service.run(TRANSPORT, PLANNING)
    with_role = service.run(Requester("transport", "department", roles=("analyst",)), PLANNING)
    other_fields = service.run(TRANSPORT, PLANNING.model_copy(update={"fields": ["id", "type", "intensity"]}))
    assert recorded(db, with_role.decision_id).cached is False
    assert recorded(db, other_fields.decision_id).cached is False
    assert point_of(service).hits == 0


def test_a_cached_sharing_decision_ends_with_the_agreement_period(
        service: QueryService, db: Engine, clock: Clock) -> None:
    store(db, traffic(3))
    clock.now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert len(service.run(LAB, MOBILITY).records) == 3
    assert recorded(db, service.run(LAB, MOBILITY).decision_id).cached is True
    clock.now = datetime(2027, 1, 1, tzinfo=UTC)  # one second later, well within the TTL: valid_until is exclusive
    with pytest.raises(AccessDeniedError) as denied:
        service.run(LAB, MOBILITY)
    assert "agreement_not_in_force" in denied.value.reasons


def test_failed_evaluations_are_never_reused(service: QueryService, db: Engine,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store(db, traffic(3))
    point = point_of(service)
    real = point.engine.decide
    failures = iter([True])

    def flaky(policy_input: PolicyInput) -> Decision:
        if next(failures, False):
            return Decision.fail_closed(point.revision, "engine_error", "test")
        return real(policy_input)

    monkeypatch.setattr(point.engine, "decide", flaky)
    with pytest.raises(AccessDeniedError) as denied:
        service.run(TRANSPORT, PLANNING)
    assert denied.value.reasons == ("policy_engine_error",)
    allowed = service.run(TRANSPORT, PLANNING)
    assert recorded(db, allowed.decision_id).cached is False and len(allowed.records) == 3


def test_the_ttl_ends_reuse_and_zero_turns_it_off(settings: Settings, db: Engine, clock: Clock) -> None:
    store(db, traffic(3))
    service = QueryService.from_settings(settings.model_copy(update={"policy_cache_seconds": 60}), db, clock=clock)
    service.run(TRANSPORT, PLANNING)
    clock.now = FIXED_NOW + timedelta(seconds=60)
    assert recorded(db, service.run(TRANSPORT, PLANNING).decision_id).cached is False
    clock.now = FIXED_NOW - timedelta(seconds=1)  # a clock set back: never a decision made "later"
    assert recorded(db, service.run(TRANSPORT, PLANNING).decision_id).cached is False
    off = QueryService.from_settings(settings.model_copy(update={"policy_cache_seconds": 0}), db, clock=clock)
    off.run(TRANSPORT, PLANNING)
    assert recorded(db, off.run(TRANSPORT, PLANNING).decision_id).cached is False


def test_agreement_times_are_read_from_the_bundle() -> None:
    files = {"data/agreements.json": b'{"agreements": {"a": {"valid_from": "2026-01-01T00:00:00Z", '
                                     b'"valid_until": "2027-01-01T00:00:00+01:00"}}}'}
    assert agreement_times(files) == (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC))
    assert agreement_times({}) == ()
    unreadable = {"data/agreements.json": b'{"agreements": {"a": {"valid_until": "next year"}}}'}
    assert agreement_times(unreadable) is None  # nothing is reused then
