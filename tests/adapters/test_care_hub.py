"""The ugly cases of the home care hubs (special-category data: nothing personal leaks into ids or errors)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from adapters.care_hub import ALERT_EVENTS, OBSERVATION_EVENTS, CareHubAdapter, fall_severity
from governance.catalog import default_catalog
from governance.errors import InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage
from tests.smart_data_models import official_errors

ADAPTER = CareHubAdapter()

FALL: dict[str, Any] = {
    "hub": "H-1029",
    "resident": "R-55812",
    "event": "fall_detected",
    "value": None,
    "confidence": 0.93,
    "at": "2026-11-20T03:12:44+01:00",
}


def message(payload: dict[str, Any] | bytes) -> RawMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(payload=raw, source="test", received_at=datetime(2026, 11, 20, 2, 13, tzinfo=UTC))


def parse(payload: dict[str, Any] | bytes) -> list[ParsedEntity]:
    return ADAPTER.parse(message(payload))


def only(payload: dict[str, Any] | bytes) -> ParsedEntity:
    (entity,) = parse(payload)
    return entity


def rejected(payload: dict[str, Any] | bytes) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        parse(payload)
    return info.value


def test_a_fall_is_an_official_health_alert() -> None:
    alert = only(FALL).data
    assert alert == {
        "id": "urn:ngsi-ld:Alert:H-1029-1795140764-fall_detected",
        "type": "Alert",
        "category": "health",
        "subCategory": "fallenPatient",
        "severity": "critical",
        "description": "Fall detected by the home care hub",
        "alertSource": "urn:ngsi-ld:Device:H-1029",
        "dateIssued": "2026-11-20T02:12:44Z",
        "refResident": "urn:ngsi-ld:Person:R-55812",
    }
    assert official_errors(alert) == []
    default_catalog().get("Alert").validate(alert)


def test_sos_is_a_health_alert_without_a_forced_subcategory() -> None:
    alert = only({**FALL, "event": "sos_button", "confidence": None}).data
    assert alert["category"] == "health" and alert["severity"] == "critical"
    assert "subCategory" not in alert
    assert alert["id"] == "urn:ngsi-ld:Alert:H-1029-1795140764-sos_button"
    assert official_errors(alert) == []


def test_the_resident_is_never_part_of_an_entity_id() -> None:
    for event in [*ALERT_EVENTS, *OBSERVATION_EVENTS]:
        value = {"inactivity": 30, "heart_rate": 70}.get(event)
        entity = only({**FALL, "event": event, "value": value})
        assert "R-55812" not in entity.entity_id
        assert entity.data["refResident"] == "urn:ngsi-ld:Person:R-55812"


def test_two_alerts_of_one_hub_get_two_ids_and_observations_keep_one() -> None:
    first = only(FALL).entity_id
    second = only({**FALL, "at": "2026-11-20T03:14:02+01:00"}).entity_id
    assert first != second
    rate = {**FALL, "event": "heart_rate", "value": 70}
    assert only(rate).entity_id == only({**rate, "at": "2026-11-20T04:00:00+01:00"}).entity_id


@pytest.mark.parametrize(
    ("confidence", "severity"),
    [
        (None, "critical"),
        (0.93, "critical"),
        (0.8, "critical"),
        (0.62, "high"),
        (0.5, "high"),
        (0.2, "medium"),
        (0, "medium"),
    ],
)
def test_fall_severity_follows_confidence(confidence: float | None, severity: str) -> None:
    assert fall_severity(confidence) == severity
    assert only({**FALL, "confidence": confidence}).data["severity"] == severity


@pytest.mark.parametrize(
    ("event", "value", "observation_type", "unit"),
    [
        ("heart_rate", 72, "heartRate", "5K"),
        ("heart_rate", 20, "heartRate", "5K"),
        ("heart_rate", 250, "heartRate", "5K"),
        ("inactivity", 0, "inactivity", "MIN"),
        ("inactivity", 185.5, "inactivity", "MIN"),
    ],
)
def test_measured_events_become_resident_observations(
    event: str, value: float, observation_type: str, unit: str
) -> None:
    entity = only({**FALL, "event": event, "value": value, "confidence": 0.98}).data
    assert entity == {
        "id": f"urn:ngsi-ld:ResidentObservation:H-1029-{observation_type}",
        "type": "ResidentObservation",
        "observationType": observation_type,
        "numValue": value,
        "unitCode": unit,
        "confidence": 0.98,
        "refResident": "urn:ngsi-ld:Person:R-55812",
        "refDevice": "urn:ngsi-ld:Device:H-1029",
        "dateObserved": "2026-11-20T02:12:44Z",
    }
    default_catalog().get("ResidentObservation").validate(entity)


@pytest.mark.parametrize(("event", "observation_type"), [("door_open", "doorOpen"), ("bed_exit", "bedExit")])
def test_sensor_events_carry_no_value(event: str, observation_type: str) -> None:
    entity = only({**FALL, "event": event, "confidence": None}).data
    assert entity["observationType"] == observation_type
    assert "numValue" not in entity and "unitCode" not in entity and "confidence" not in entity
    error = rejected({**FALL, "event": event, "value": 1})
    assert (error.reason, error.field) == ("unexpected_value", "value")


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"event": "heart_rate", "value": 19}, "out_of_range", "value"),
        ({"event": "heart_rate", "value": 251}, "out_of_range", "value"),
        ({"event": "heart_rate", "value": None}, "missing_field", "value"),
        ({"event": "heart_rate", "value": "72"}, "wrong_type", "value"),
        ({"event": "heart_rate", "value": True}, "wrong_type", "value"),
        ({"event": "inactivity", "value": -5}, "out_of_range", "value"),
        ({"event": "inactivity", "value": [30]}, "wrong_type", "value"),
        ({"value": 1}, "unexpected_value", "value"),
        ({"confidence": 1.4}, "out_of_range", "confidence"),
        ({"confidence": -0.1}, "out_of_range", "confidence"),
        ({"confidence": "high"}, "wrong_type", "confidence"),
        ({"event": "medication_taken"}, "unknown_event", "event"),
        ({"event": "FALL_DETECTED"}, "unknown_event", "event"),
        ({"event": 3}, "wrong_type", "event"),
        ({"event": None}, "missing_field", "event"),
        ({"resident": None}, "missing_field", "resident"),
        ({"resident": 55812}, "wrong_type", "resident"),
        ({"hub": ""}, "missing_field", "hub"),
        ({"hub": "H 1029"}, "invalid_id", "hub"),
        ({"at": None}, "missing_field", "at"),
        ({"at": "2026-11-20T03:12:44"}, "timestamp_without_zone", "at"),
        ({"at": "20/11/2026 03:12"}, "invalid_timestamp", "at"),
        ({"at": False}, "wrong_type", "at"),
    ],
)
def test_bad_events_are_refused_naming_the_field(changes: dict[str, Any], reason: str, field: str) -> None:
    error = rejected({**FALL, **changes})
    assert (error.reason, error.field) == (reason, field)


def test_errors_never_echo_the_resident_id() -> None:
    error = rejected({**FALL, "resident": "Maria Lopez Garcia, 12 Calle Mayor"})
    assert error.reason == "invalid_id"
    assert "Maria" not in error.detail and "Calle" not in error.detail


def test_unknown_event_names_do_not_leak_long_values() -> None:
    error = rejected({**FALL, "event": "x" * 300})
    assert "x" * 41 not in error.detail


def test_extra_fields_are_named_and_never_stored() -> None:
    body = {**FALL, "resident_name": "Maria Lopez Garcia", "room": "bedroom", "notes": {"meds": "warfarin"}}
    entity = only(body)
    assert entity.removed_fields == ("notes", "resident_name", "room")
    dumped = orjson.dumps(entity.data).decode()
    assert "Maria" not in dumped and "bedroom" not in dumped and "warfarin" not in dumped


def test_epoch_timestamps_are_unambiguous_and_accepted() -> None:
    assert only({**FALL, "at": 1795140764000}).data["dateIssued"] == "2026-11-20T02:12:44Z"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"hub": "H-1029", "resident": "R-55812", "event": "fall_detected", "at": ', "invalid_json"),
        (b'{"hub": "H-1029", "event": "heart_rate", "value": NaN}', "invalid_json"),
        (b'{"hub": "H-1029", "event": "heart_rate", "value": Infinity}', "invalid_json"),
        ('{"hub": "H-1029", "note": "Mar\u00eda"}'.encode("latin-1"), "not_utf8"),
        (b"\xff\xfe{}", "not_utf8"),
        (b"null", "invalid_json"),
    ],
)
def test_malformed_bytes_are_refused(payload: bytes, reason: str) -> None:
    assert rejected(payload).reason == reason
