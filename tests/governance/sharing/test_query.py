"""QueryService.run end to end on SQLite and PostgreSQL: decide, read, decrypt what is released, shape, limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine

from governance.audit.decisions import record_from_entry
from governance.audit.query import EntryFilter, find_entries, get_entry
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.errors import AccessDeniedError, InvalidRequestError, PayloadTooLargeError, QuotaExceededError
from governance.policy.bundle import BundleStore, load_folder
from governance.policy.replay import replay_record
from governance.protect.fieldcrypt import FieldProtector
from governance.sharing.agreements import AgreementRegistry
from governance.sharing.query import QueryRequest, QueryService, Requester
from governance.store.entities import count_entities
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import alert, grant, observation, store, terms, traffic

TRANSPORT = Requester("transport", "department")
LAB = Requester("university-mobility-lab", "external")
GP = Requester("gp-practice-centro", "external")
INSTITUTE = Requester("public-health-institute", "external")
STATS = Requester("stats-office", "external")


def ask(**body: Any) -> QueryRequest:
    return QueryRequest.model_validate(body)


def mobility(**changes: Any) -> QueryRequest:
    body: dict[str, Any] = {"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                            "fields": ["id", "type", "location", "intensity", "dateObservedFrom", "refRoadSegment"],
                            "agreement": "dsa-2026-001"}
    body.update(changes)
    return ask(**body)


def planning(**changes: Any) -> QueryRequest:
    body: dict[str, Any] = {"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
                            "fields": ["id", "type", "intensity", "location"]}
    body.update(changes)
    return ask(**body)


# --- deciding --------------------------------------------------------------------------------------


def test_a_department_uses_its_entitled_data_and_the_decision_is_audited(service: QueryService, db: Engine) -> None:
    store(db, traffic(5))
    result = service.run(TRANSPORT, planning())
    assert result.stage == "use" and len(result.records) == 5
    assert {r["intensity"] for r in result.records} == {100, 101, 102, 103, 104}
    assert result.fields == ["id", "intensity", "location", "type"]
    with db.connect() as conn:
        entry = get_entry(conn, int(result.decision_id))
    assert entry is not None and entry.fields["action"] == "policy.decision"
    assert entry.fields["stage"] == "use" and entry.fields["decision"] == "allow"
    assert entry.fields["policy_revision"] == result.policy_revision == load_folder().revision


def test_sharing_under_an_agreement_carries_out_its_obligations(service: QueryService, db: Engine) -> None:
    store(db, traffic(4))
    result = service.run(LAB, mobility())
    assert result.stage == "sharing"
    assert set(result.obligations) == {"drop_fields", "generalize_location", "generalize_time"}
    assert "refRoadSegment" not in result.fields
    for record in result.records:
        assert "refRoadSegment" not in record
        assert record["dateObservedFrom"].endswith(":00:00Z")  # bucketed to the hour
        lon, lat = record["location"]["coordinates"]
        assert (lon, lat) != (2.17, 41.38)  # snapped to the centre of a 250 m cell
    assert len({str(r["location"]) for r in result.records}) < 4  # four points 85 m apart share cells


def test_no_agreement_no_data_and_the_deny_is_recorded(service: QueryService, db: Engine) -> None:
    store(db, traffic(3))
    with pytest.raises(AccessDeniedError) as denied:
        service.run(LAB, mobility(agreement=None))
    assert denied.value.reasons == ("no_agreement",)
    with db.connect() as conn:
        entry = get_entry(conn, int(denied.value.decision_id or "-1"))
    assert entry is not None and entry.fields["decision"] == "deny"


def test_an_agreement_used_after_its_period_is_denied(service: QueryService, db: Engine, clock: Clock) -> None:
    store(db, traffic(3))
    assert len(service.run(LAB, mobility()).records) == 3
    clock.now = FIXED_NOW.replace(year=2027, month=1, day=1, hour=0)  # valid_until is exclusive
    with pytest.raises(AccessDeniedError) as denied:
        service.run(LAB, mobility())
    assert "agreement_not_in_force" in denied.value.reasons


def test_a_revoked_agreement_stops_sharing_at_once(service: QueryService, registry: AgreementRegistry,
                                                   db: Engine) -> None:
    store(db, traffic(3))
    before = service.run(LAB, mobility())
    registry.revoke("dsa-2026-001", actor="test")
    with pytest.raises(AccessDeniedError) as denied:
        service.run(LAB, mobility())
    assert "agreement_revoked" in denied.value.reasons and "unknown_agreement" in denied.value.reasons
    assert before.policy_revision == load_folder().revision


def test_an_agreement_added_to_the_register_is_usable_at_once(service: QueryService, registry: AgreementRegistry,
                                                              db: Engine) -> None:
    store(db, traffic(3))
    with pytest.raises(AccessDeniedError):
        service.run(STATS, mobility(agreement="dsa-t-new", fields=["intensity"]))
    registry.add(terms("dsa-t-new"), actor="test")
    result = service.run(STATS, mobility(agreement="dsa-t-new", fields=["intensity", "location"]))
    assert [r["intensity"] for r in result.records] == [100, 101, 102]
    assert result.policy_revision != load_folder().revision
    with pytest.raises(AccessDeniedError) as denied:  # the agreement is the statistics office's, not the lab's
        service.run(LAB, mobility(agreement="dsa-t-new", fields=["intensity"]))
    assert denied.value.reasons == ("recipient_not_party",)


def test_decisions_under_the_register_replay_after_it_changed(service: QueryService, registry: AgreementRegistry,
                                                              db: Engine, settings: Settings) -> None:
    store(db, traffic(2))
    registry.add(terms("dsa-t-replay"), actor="test")
    result = service.run(STATS, mobility(agreement="dsa-t-replay", fields=["intensity"]))
    registry.revoke("dsa-t-replay", actor="test")  # the register moves on; the recorded revision stays
    with db.connect() as conn:
        entry = get_entry(conn, int(result.decision_id))
    assert entry is not None
    replayed = replay_record(record_from_entry(entry.fields), BundleStore.for_settings(settings))
    assert replayed.matches and replayed.replayed.allow


@pytest.mark.parametrize("changes", [
    {"purpose": "x" * 200},
    {"purpose": "research mobility; DROP"},
    {"agreement": "dsa/../../x"},
    {"agreement": "a" * 200},
    {"fields": ["intensity", "intensity"]},
])
def test_oversized_or_odd_names_are_refused_before_deciding(service: QueryService, db: Engine,
                                                            changes: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        service.run(LAB, mobility(**changes))
    with db.connect() as conn:
        assert find_entries(conn, EntryFilter(action="policy.decision")) == []  # refused before any decision


# --- reading ---------------------------------------------------------------------------------------


def test_pages_follow_a_tamper_evident_cursor(service: QueryService, db: Engine) -> None:
    store(db, traffic(25))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        result = service.run(TRANSPORT, planning(page_size=10, cursor=cursor))
        seen += [r["id"] for r in result.records]
        pages += 1
        cursor = result.next_cursor
        if cursor is None:
            break
        assert len(result.records) == 10
    assert pages == 3 and len(seen) == 25 and len(set(seen)) == 25
    first = service.run(TRANSPORT, planning(page_size=10))
    assert first.next_cursor is not None
    head, payload, tag = first.next_cursor.split(".")
    forged = [f"{head}.eyJrIjo1fQ.{tag}", f"{head}.{payload}.{tag[:-2]}AA", first.next_cursor + "x", "c1..",
              "' OR 1=1 --", "c1." + "A" * 300]
    for cursor in forged:
        with pytest.raises(InvalidRequestError, match="cursor"):
            service.run(TRANSPORT, planning(page_size=10, cursor=cursor))
    with pytest.raises(InvalidRequestError, match="cursor"):  # another query
        service.run(TRANSPORT, planning(page_size=10, cursor=first.next_cursor, fields=["id", "intensity"]))
    with pytest.raises(InvalidRequestError, match="cursor"):  # another requester
        service.run(Requester("energy", "department"), planning(page_size=10, cursor=first.next_cursor,
                                                                purpose="energy.management"))
    assert len(service.run(TRANSPORT, planning(page_size=20, cursor=first.next_cursor)).records) == 15


def test_filters_are_parameters_not_sql(service: QueryService, db: Engine) -> None:
    store(db, traffic(30))
    in_time = service.run(TRANSPORT, planning(where={"from": FIXED_NOW - timedelta(days=1),
                                                     "to": FIXED_NOW - timedelta(days=1) + timedelta(hours=1)}))
    # observed_at of a flow is its dateObservedTo: the first three 15-minute periods end inside the hour
    assert [r["intensity"] for r in in_time.records] == [100, 101, 102]
    boxed = service.run(TRANSPORT, planning(where={"bbox": [2.1695, 41.3795, 2.1715, 41.3815]}))
    assert sorted(r["intensity"] for r in boxed.records) == [100, 101, 110, 111]  # a 2 x 2 corner of the grid
    by_id = service.run(TRANSPORT, planning(where={"ids": ["urn:ngsi-ld:TrafficFlowObserved:tf-7",
                                                           "' OR '1'='1", "x\"); DROP TABLE entity; --"]}))
    assert [r["intensity"] for r in by_id.records] == [107]
    assert count_entities(db) == 30
    for dataset in ("lighting.traffic-flow' OR '1'='1", "lighting.traffic-flow; DELETE FROM entity"):
        with pytest.raises(InvalidRequestError, match="unknown dataset"):
            service.run(TRANSPORT, planning(dataset=dataset))
    with pytest.raises(InvalidRequestError, match="no field"):
        service.run(TRANSPORT, planning(fields=["intensity", "data->>'refResident'"]))


def test_pages_by_ids_and_sparse_bbox_pages_read_on_until_full(service: QueryService, db: Engine) -> None:
    store(db, traffic(120))
    ids = [f"urn:ngsi-ld:TrafficFlowObserved:tf-{i}" for i in (3, 50, 7, 119, 60)]
    seen: list[int] = []
    cursor = None
    while True:  # by ids, two a page, in stored order
        page = service.run(TRANSPORT, planning(where={"ids": ids}, page_size=2, cursor=cursor))
        seen += [r["intensity"] for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [103, 107, 150, 160, 219]
    # the grid's last row (i >= 110) lies in this box: a page of 3 reads on past 110 rows that do not match
    boxed = service.run(TRANSPORT, planning(where={"bbox": [2.1695, 41.3905, 2.1795, 41.3915]}, page_size=3))
    assert [r["intensity"] for r in boxed.records] == [210, 211, 212] and boxed.next_cursor is not None
    rest = service.run(TRANSPORT, planning(where={"bbox": [2.1695, 41.3905, 2.1795, 41.3915]}, page_size=10,
                                           cursor=boxed.next_cursor))
    assert [r["intensity"] for r in rest.records] == list(range(213, 220))


@pytest.mark.parametrize(("where", "message"), [
    ({"from": "2026-11-20T12:00:00Z", "to": "2026-11-19T12:00:00Z"}, "before"),
    ({"from": "2026-11-20T12:00:00"}, "time zone"),
    ({"bbox": [10, 50, 5, 40]}, "bbox"),
    ({"bbox": [0, 0, 1e308 * 10, 1]}, "bbox"),
    ({"bbox": [-200, 0, 1, 1]}, "bbox"),
    ({"ids": [""]}, "ids"),
    ({"ids": ["x" * 300]}, "ids"),
])
def test_bad_filters_are_refused(service: QueryService, where: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        service.run(TRANSPORT, planning(where=where))


@pytest.mark.parametrize("body", [
    {"dataset": 1, "purpose": "x", "fields": ["a"]},
    {"dataset": "d", "purpose": "x", "fields": []},
    {"dataset": "d", "purpose": "x", "fields": ["a"] * 65},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "page_size": "lots"},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "page_size": 0},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "sql": "select 1"},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "where": {"ids": ["i"] * 501}},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "where": {"bbox": [1, 2, 3]}},
    {"dataset": "d", "purpose": "x", "fields": ["a"], "aggregate": {"function": "median"}},
])
def test_malformed_requests_do_not_parse(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        QueryRequest.model_validate(body)


def test_rows_past_retention_are_not_served(service: QueryService, db: Engine) -> None:
    store(db, traffic(2))
    store(db, traffic(3, start=FIXED_NOW - timedelta(days=40)), retain_until=FIXED_NOW - timedelta(seconds=1))
    assert len(service.run(TRANSPORT, planning()).records) == 2


def test_ngsi_ld_output(service: QueryService, db: Engine) -> None:
    store(db, traffic(2))
    result = service.run(TRANSPORT, planning(format="ngsi-ld", fields=["id", "intensity", "location"]))
    entity = result.records[0]
    assert entity["type"] == "TrafficFlowObserved" and "@context" in entity
    assert entity["intensity"]["type"] == "Property" and entity["location"]["type"] == "GeoProperty"
    with pytest.raises(InvalidRequestError, match="NGSI-LD"):
        service.run(TRANSPORT, planning(format="ngsi-ld", fields=["intensity"]))


# --- limits ----------------------------------------------------------------------------------------


def limited(settings: Settings, db: Engine, clock: Clock, **limits: Any) -> QueryService:
    return QueryService.from_settings(settings.model_copy(update=limits), db, clock=clock)


def test_limits_on_pages_results_and_scans(settings: Settings, db: Engine, clock: Clock) -> None:
    store(db, traffic(40))
    service = limited(settings, db, clock, query_max_page_size=20, query_max_result_bytes=2048,
                      query_max_scan_rows=30)
    with pytest.raises(PayloadTooLargeError, match="page_size"):
        service.run(TRANSPORT, planning(page_size=21))
    with pytest.raises(PayloadTooLargeError, match="bytes"):
        service.run(TRANSPORT, planning(page_size=20))
    assert len(service.run(TRANSPORT, planning(page_size=5)).records) == 5
    with pytest.raises(PayloadTooLargeError, match="narrower"):
        service.run(TRANSPORT, planning(aggregate={"function": "count"}))


# --- personal data ---------------------------------------------------------------------------------


def care_store(db: Engine, protector: FieldProtector) -> None:
    store(db, [observation(n, resident, 60.0 + resident) for resident in (1, 2, 3) for n in range(4)], protector)


def test_consent_based_sharing_decrypts_released_fields_for_consenting_subjects_only(
        service: QueryService, db: Engine, protector: FieldProtector, consents: ConsentRegistry) -> None:
    care_store(db, protector)
    grant(consents, 1, "gp-practice-centro")
    grant(consents, 2, "gp-practice-centro")
    grant(consents, 3, "someone-else")  # consent, but not for this recipient
    result = service.run(GP, ask(dataset="care.observation", purpose="care.monitoring", agreement="dsa-2026-004",
                                 fields=["id", "type", "numValue", "refResident", "dateObserved"]))
    assert len(result.records) == 8 and result.suppressed == 4
    assert {r["numValue"] for r in result.records} == {61.0, 62.0}
    assert all(r["dateObserved"].startswith("2026-11-20T") for r in result.records)
    residents = {r["refResident"] for r in result.records}
    assert len(residents) == 2 and all(r.startswith("rpsn:v1:") for r in residents)
    assert all(r["id"].startswith("rpsn:v1:") for r in result.records)  # the stored pseudonym id never leaves
    assert "require_consent" in result.obligations and "pseudonymize" in result.obligations


def test_two_departments_cannot_link_their_results(service: QueryService, registry: AgreementRegistry, db: Engine,
                                                   protector: FieldProtector, consents: ConsentRegistry) -> None:
    care_store(db, protector)
    fields = ["id", "type", "numValue", "refResident"]
    for department in ("transport", "environment"):
        registry.add(terms(f"dsa-t-{department}", provider="social-care", recipient=department,
                           recipient_kind="department", datasets=["care.observation"], purposes=["care.monitoring"],
                           fields=fields, basis="consent"), actor="test")
    for resident in (1, 2, 3):
        grant(consents, resident, "transport", "environment")
    seen: dict[str, set[str]] = {}
    for department in ("transport", "environment"):
        result = service.run(Requester(department, "department"), ask(
            dataset="care.observation", purpose="care.monitoring", agreement=f"dsa-t-{department}", fields=fields))
        assert len(result.records) == 12
        seen[department] = {r["refResident"] for r in result.records} | {r["id"] for r in result.records}
    own = service.run(Requester("social-care", "department"),
                      ask(dataset="care.observation", purpose="care.monitoring", fields=fields))
    assert own.stage == "use" and len(own.records) == 12
    seen["social-care"] = {r["refResident"] for r in own.records} | {r["id"] for r in own.records}
    assert len(seen["transport"]) == len(seen["environment"]) == 3 + 12
    assert not seen["transport"] & seen["environment"]
    assert not seen["social-care"] & (seen["transport"] | seen["environment"])


def test_erased_subjects_are_gone_from_answers(service: QueryService, db: Engine, protector: FieldProtector,
                                               consents: ConsentRegistry) -> None:
    care_store(db, protector)
    for resident in (1, 2, 3):
        grant(consents, resident, "gp-practice-centro")
    protector.shred("urn:ngsi-ld:Person:R-2")
    result = service.run(GP, ask(dataset="care.observation", purpose="care.monitoring", agreement="dsa-2026-004",
                                 fields=["numValue", "refResident"]))
    assert {r["numValue"] for r in result.records} == {61.0, 63.0}


def test_break_glass_gives_the_dispatcher_the_alert(service: QueryService, db: Engine,
                                                    protector: FieldProtector) -> None:
    store(db, [alert(1, 7, day=20, lon=2.17, lat=41.38)], protector)
    dispatcher = Requester("emergency-services", "department", roles=("dispatcher",))
    result = service.run(dispatcher, ask(dataset="care.alert", purpose="emergency.response", break_glass=True,
                                         fields=["location", "severity", "refResident"]))
    [record] = result.records
    assert record["location"] == {"type": "Point", "coordinates": [2.17, 41.38]} and record["severity"] == "high"
    assert record["refResident"].startswith("rpsn:v1:")
    with pytest.raises(AccessDeniedError) as denied:
        service.run(Requester("emergency-services", "department", roles=("clerk",)),
                    ask(dataset="care.alert", purpose="emergency.response", break_glass=True, fields=["location"]))
    assert denied.value.reasons == ("break_glass_refused",)


# --- anonymized releases ---------------------------------------------------------------------------


def falls(n: int) -> list[dict[str, Any]]:
    """Alerts spread over four 1-km cells and three days, two kinds."""
    cells = [(2.150, 41.370), (2.170, 41.390), (2.190, 41.410), (2.210, 41.430)]
    return [alert(i, 100 + i, day=18 + i % 3, lon=cells[i % 4][0] + 0.0001 * (i % 7),
                  lat=cells[i % 4][1], sub="fallenPatient" if i % 5 else "heartAttack") for i in range(n)]


def research(**changes: Any) -> QueryRequest:
    body: dict[str, Any] = {"dataset": "care.alert", "purpose": "research.public-health", "agreement": "dsa-2026-002",
                            "fields": ["subCategory", "dateIssued", "location", "refResident"],
                            "aggregate": {"function": "count", "group_by": ["subCategory"]}}
    body.update(changes)
    return ask(**body)


def test_aggregate_only_with_k_anonymity(service: QueryService, db: Engine, protector: FieldProtector) -> None:
    store(db, falls(120), protector)
    result = service.run(INSTITUTE, research())
    assert "refResident" not in result.fields  # the subject is dropped from anonymized data
    counts = {r["subCategory"]: r["count"] for r in result.records}
    assert sum(counts.values()) + result.suppressed == 120
    assert set(counts) == {"fallenPatient", "heartAttack"}
    assert {"aggregate_only", "k_anonymity"} <= set(result.obligations)
    with pytest.raises(AccessDeniedError) as denied:
        service.run(INSTITUTE, research(aggregate=None))
    assert denied.value.reasons == ("aggregate_required",)
    with pytest.raises(AccessDeniedError) as denied:
        service.run(INSTITUTE, research(fields=["subCategory", "severity"],
                                        aggregate={"function": "count", "group_by": ["severity"]}))
    with pytest.raises(InvalidRequestError):  # not a requested field
        service.run(INSTITUTE, research(aggregate={"function": "count", "group_by": ["severity"]}))


def test_too_few_records_for_k_are_all_suppressed(service: QueryService, db: Engine,
                                                  protector: FieldProtector) -> None:
    store(db, falls(9), protector)
    result = service.run(INSTITUTE, research())
    assert result.records == [] and result.suppressed == 9


def test_k_anonymous_records_without_aggregation(service: QueryService, registry: AgreementRegistry, db: Engine
                                                 ) -> None:
    store(db, traffic(60))
    registry.add(terms("dsa-t-k", obligations=[
        {"kind": "k_anonymity", "k": 5, "quasi_identifiers": ["location", "dateObserved"]}]), actor="test")
    result = service.run(STATS, mobility(agreement="dsa-t-k", fields=["location", "dateObserved", "intensity"]))
    assert len(result.records) + result.suppressed == 60
    classes: dict[str, int] = {}
    for record in result.records:
        key = repr((record["location"], record["dateObserved"]))
        classes[key] = classes.get(key, 0) + 1
    assert min(classes.values()) >= 5 and len(classes) >= 6
    with pytest.raises(InvalidRequestError):  # answered whole: no cursor is ever valid for it
        service.run(STATS, mobility(agreement="dsa-t-k", fields=["location"], cursor="c1.x.y"))
    assert result.next_cursor is None


def test_differential_privacy_spends_the_agreement_budget(service: QueryService, registry: AgreementRegistry,
                                                          db: Engine) -> None:
    store(db, traffic(200))
    registry.add(terms("dsa-t-dp", epsilon_budget=1.0,
                       obligations=[{"kind": "noise_budget", "epsilon": 0.5}]), actor="test")
    request = mobility(agreement="dsa-t-dp", fields=["intensity", "location"], aggregate={"function": "count"})
    answers = [service.run(STATS, request) for _ in range(2)]
    assert [a.epsilon_spent for a in answers] == [0.5, 0.5]
    assert all(abs(a.records[0]["count"] - 200) < 40 for a in answers)
    with pytest.raises(QuotaExceededError) as spent:
        service.run(STATS, request)
    assert spent.value.reasons == ("privacy_budget_exhausted",) and spent.value.decision_id
    assert service.budget.state("dsa-t-dp", total=1.0).spent == 1.0
    with pytest.raises(AccessDeniedError) as denied:
        service.run(STATS, mobility(agreement="dsa-t-dp", fields=["intensity"]))
    assert denied.value.reasons == ("aggregate_required",)


def test_dp_sums_need_bounds_from_the_schema_or_the_request(service: QueryService, registry: AgreementRegistry,
                                                            db: Engine) -> None:
    store(db, traffic(100))
    registry.add(terms("dsa-t-dps", epsilon_budget=5.0,
                       obligations=[{"kind": "noise_budget", "epsilon": 1.0}]), actor="test")
    with pytest.raises(InvalidRequestError, match="bounds"):  # intensity has a minimum but no maximum
        service.run(STATS, mobility(agreement="dsa-t-dps", fields=["intensity"],
                                    aggregate={"function": "sum", "field": "intensity"}))
    assert service.budget.state("dsa-t-dps", total=5.0).spent == 0.0  # refused before anything was spent
    result = service.run(STATS, mobility(agreement="dsa-t-dps", fields=["intensity"],
                                         aggregate={"function": "mean", "field": "intensity", "bounds": [0, 500]}))
    assert 50 <= result.records[0]["mean"] <= 250  # true 149.5; the sum's noise has scale 1000 over 100 records
    with pytest.raises(InvalidRequestError, match="delta"):
        service.run(STATS, mobility(agreement="dsa-t-dps", fields=["intensity", "location"],
                                    aggregate={"function": "count", "group_by": ["location"]}))


def test_the_request_quota_is_per_day(service: QueryService, registry: AgreementRegistry, db: Engine,
                                      clock: Clock) -> None:
    store(db, traffic(2))
    registry.add(terms("dsa-t-q", quota_per_day=2), actor="test")
    request = mobility(agreement="dsa-t-q", fields=["intensity"])
    service.run(STATS, request)
    service.run(STATS, request)
    with pytest.raises(QuotaExceededError) as refused:
        service.run(STATS, request)
    assert refused.value.reasons == ("request_quota_exceeded",)
    clock.advance(days=1)
    assert len(service.run(STATS, request).records) == 2


def test_exact_aggregates_for_a_department(service: QueryService, db: Engine) -> None:
    store(db, traffic(10))
    result = service.run(TRANSPORT, planning(aggregate={"function": "sum", "field": "intensity"}))
    assert result.records == [{"sum": float(sum(range(100, 110)))}]
    result = service.run(TRANSPORT, planning(aggregate={"function": "mean", "field": "intensity",
                                                        "group_by": ["type"]}))
    assert result.records == [{"type": "TrafficFlowObserved", "mean": 104.5}]


def test_personal_entities_are_found_by_their_real_id(service: QueryService, db: Engine, protector: FieldProtector,
                                                      consents: ConsentRegistry) -> None:
    care_store(db, protector)
    grant(consents, 2)
    wanted = observation(1, 2)["id"]
    result = service.run(Requester("social-care", "department"), ask(
        dataset="care.observation", purpose="care.monitoring", fields=["id", "numValue"],
        where={"ids": [wanted, "urn:ngsi-ld:ResidentObservation:nobody"]}))
    assert [r["numValue"] for r in result.records] == [62.0]
    assert result.records[0]["id"] != wanted and result.records[0]["id"].startswith("rpsn:v1:")
