"""The enforcement module: every obligation on a batch of records, and refusal of anything unknown."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from governance.policy.consent import ConsentGrant, InterimConsentRegistry
from governance.policy.enforce import enforce, generalize_instant, generalize_point, hmac_pseudonymizer
from governance.policy.errors import ObligationError, ObligationNotEnforcedError, UnknownObligationError
from governance.policy.model import Obligation

AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
_OBLIGATION: TypeAdapter[Obligation] = TypeAdapter(Obligation)


def ob(**fields: Any) -> Obligation:
    return _OBLIGATION.validate_python(fields)


def alerts(n: int = 3) -> list[dict[str, Any]]:
    return [{"id": f"a{i}", "refResident": f"urn:ngsi-ld:Person:R-{i}", "category": "health",
             "location": {"type": "Point", "coordinates": [-3.70256 + i * 0.01, 40.41692]},
             "dateIssued": f"2026-11-20T03:{10 + i}:44Z"} for i in range(n)]


def registry(*subjects: str, purpose: str = "care.monitoring", **extra: Any) -> InterimConsentRegistry:
    return InterimConsentRegistry(ConsentGrant(subject=s, purpose=purpose, given_at=AT - timedelta(days=1), **extra)
                                  for s in subjects)


def test_records_are_copied_never_changed_in_place() -> None:
    records = alerts(1)
    result = enforce([ob(kind="drop_fields", fields=["refResident"])], records)
    assert "refResident" in records[0] and "refResident" not in result.records[0]
    assert result.removed_fields == {"refResident"}


def test_mask_keeps_only_what_it_is_told() -> None:
    result = enforce([ob(kind="mask", fields=["id", "location"], keep_last=1)], [{"id": "abcdef", "location": {}}])
    assert result.records == [{"id": "****f", "location": None}]


def test_pseudonyms_are_keyed_and_differ_per_recipient() -> None:
    pseudonymize = hmac_pseudonymizer({"lab": b"k1" * 16, "gp": b"k2" * 16})
    records = alerts(2)
    lab = enforce([ob(kind="pseudonymize", fields=["refResident"], recipient="lab")], records,
                  pseudonymizer=pseudonymize).records
    gp = enforce([ob(kind="pseudonymize", fields=["refResident"], recipient="gp")], records,
                 pseudonymizer=pseudonymize).records
    assert lab[0]["refResident"] != gp[0]["refResident"] != records[0]["refResident"]
    assert lab[0]["refResident"] == enforce([ob(kind="pseudonymize", fields=["refResident"], recipient="lab")],
                                            records, pseudonymizer=pseudonymize).records[0]["refResident"]
    assert len({r["refResident"] for r in lab}) == 2
    with pytest.raises(ObligationError, match="no pseudonymization key"):
        enforce([ob(kind="pseudonymize", fields=["refResident"], recipient="press")], records,
                pseudonymizer=pseudonymize)


def test_pseudonymize_without_keys_fails_closed() -> None:
    with pytest.raises(ObligationError, match="pseudonymizer"):
        enforce([ob(kind="pseudonymize", fields=["refResident"], recipient="lab")], alerts(1))


def test_location_snaps_to_the_centre_of_its_grid_cell() -> None:
    a = generalize_point({"type": "Point", "coordinates": [-3.70256, 40.41692]}, 1000)
    b = generalize_point({"type": "Point", "coordinates": [-3.70300, 40.41650]}, 1000)
    assert a == b and a is not None
    lon, lat = a["coordinates"]
    assert abs(lat - 40.41692) * 111_320 < 1000 and abs(lon - -3.70256) * 111_320 * 0.76 < 1000
    assert generalize_point({"type": "Polygon", "coordinates": []}, 100) is None
    result = enforce([ob(kind="generalize_location", grid_m=250)], [{"location": "Calle Mayor 3"}])
    assert result.records == [{}] and result.removed_fields == {"location"}


def test_time_is_truncated_to_its_bucket_intervals_too() -> None:
    assert generalize_instant("2026-11-20T03:12:44Z", 3600) == "2026-11-20T03:00:00Z"
    assert generalize_instant("2026-11-20T04:12:44+01:00", 86400) == "2026-11-20T00:00:00Z"
    assert (generalize_instant("2026-11-20T06:00:00Z/2026-11-20T06:15:00Z", 3600)
            == "2026-11-20T06:00:00Z/2026-11-20T06:00:00Z")
    assert generalize_instant("yesterday", 60) is None


def test_k_anonymity_suppresses_small_groups_after_generalizing() -> None:
    records = [{"location": {"type": "Point", "coordinates": [-3.70 + (0.2 if i >= 10 else 0.0001 * i), 40.4]},
                "dateIssued": f"2026-11-20T03:{i:02d}:00Z"} for i in range(13)]
    result = enforce([
        ob(kind="k_anonymity", k=10, quasi_identifiers=["location", "dateIssued"]),
        ob(kind="generalize_location", grid_m=1000),
        ob(kind="generalize_time", fields=["dateIssued"], bucket_seconds=86400),
    ], records)
    assert result.kept == list(range(10))
    assert [r.index for r in result.refused] == [10, 11, 12]
    assert {r.reason for r in result.refused} == {"k_anonymity"}


def test_consent_is_checked_per_record_and_refusals_discard_the_payload() -> None:
    records = alerts(3)
    consent = registry("urn:ngsi-ld:Person:R-0", "urn:ngsi-ld:Person:R-2")
    result = enforce([ob(kind="require_consent", purpose="care.monitoring", subject_field="refResident")],
                     records, consent=consent, at=AT)
    assert result.kept == [0, 2]
    [refusal] = result.refused
    assert (refusal.index, refusal.reason, refusal.field, refusal.discard_payload) == (
        1, "no_legal_basis", "refResident", True)
    assert "R-1" not in refusal.detail  # the refusal names no one


def test_withdrawn_consent_and_consent_for_another_recipient_do_not_count() -> None:
    records = alerts(2)
    consent = InterimConsentRegistry([
        ConsentGrant(subject="urn:ngsi-ld:Person:R-0", purpose="care.monitoring", given_at=AT - timedelta(days=9),
                     withdrawn_at=AT - timedelta(days=1)),
        ConsentGrant(subject="urn:ngsi-ld:Person:R-1", purpose="care.monitoring", given_at=AT - timedelta(days=9),
                     recipients=("gp-practice-centro",)),
    ])
    assert enforce([ob(kind="require_consent", purpose="care.monitoring", subject_field="refResident")],
                   records, consent=consent, at=AT).kept == [1]
    assert enforce([ob(kind="require_consent", purpose="care.monitoring", subject_field="refResident",
                       recipient="public-health-institute")], records, consent=consent, at=AT).kept == []


def test_no_consent_registry_refuses_every_record() -> None:
    result = enforce([ob(kind="require_consent", purpose="care.monitoring", subject_field="refResident")],
                     alerts(2), at=AT)
    assert result.kept == [] and all(r.discard_payload for r in result.refused)


def test_a_batch_lookup_is_used_once_when_the_registry_offers_it() -> None:
    class CountingRegistry(InterimConsentRegistry):
        calls = 0

        def consents_for(self, subject_ids: Iterable[str], purpose: str, at: datetime, *,
                         recipient: str | None = None) -> set[str]:
            CountingRegistry.calls += 1
            return super().consents_for(subject_ids, purpose, at, recipient=recipient)

    consent = CountingRegistry([ConsentGrant(subject=f"urn:ngsi-ld:Person:R-{i}", purpose="care.monitoring",
                                             given_at=AT - timedelta(days=1)) for i in range(50)])
    result = enforce([ob(kind="require_consent", purpose="care.monitoring", subject_field="refResident")],
                     alerts(50), consent=consent, at=AT)
    assert len(result.kept) == 50 and CountingRegistry.calls == 1


def test_later_layer_obligations_must_be_taken_on_explicitly() -> None:
    obligations = [ob(kind="aggregate_only", group_by=["subCategory"]), ob(kind="retention", days=30)]
    with pytest.raises(ObligationNotEnforcedError, match="aggregate_only"):
        enforce(obligations, alerts(1))
    result = enforce(obligations, alerts(1), defer=("aggregate_only", "retention"))
    assert [o.kind for o in result.deferred] == ["aggregate_only", "retention"]
    result.require_handled({"aggregate_only", "retention"})
    with pytest.raises(ObligationNotEnforcedError, match="retention"):
        result.require_handled({"aggregate_only"})


def test_an_unknown_obligation_is_refused_not_skipped() -> None:
    with pytest.raises(UnknownObligationError):
        enforce([{"kind": "teleport", "fields": ["id"]}], alerts(1))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="does not match any of the expected tags"):
        ob(kind="teleport", fields=["id"])
