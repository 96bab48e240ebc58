"""The ugly cases of the people and vehicle counters: local time, DST, identifying fields."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import load_config
from adapters.traffic_counter import TrafficCounterAdapter, TrafficCounterConfig
from governance.catalog import default_catalog
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage
from tests.smart_data_models import official_errors

CONFIG = TrafficCounterConfig.model_validate(
    {
        "sources": {
            "TC-17": {"zone": "Europe/Madrid", "location": [-3.70256, 40.41692], "road_segment": "RS-1"},
            "TC-40": {"zone": "America/New_York"},
        }
    }
)
ADAPTER = TrafficCounterAdapter(CONFIG)

EXAMPLE: dict[str, Any] = {
    "sensor": "TC-17",
    "from": "2026-11-20T07:00:00",
    "to": "2026-11-20T07:15:00",
    "pedestrians": {"in": 12, "out": 9},
    "vehicles": {"car": 31, "bus": 2, "bicycle": 5},
    "avg_speed_kmh": 28.4,
}


def message(payload: dict[str, Any] | bytes) -> RawMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(payload=raw, source="test", received_at=datetime(2026, 11, 20, 6, 16, tzinfo=UTC))


def parse(payload: dict[str, Any] | bytes, adapter: TrafficCounterAdapter = ADAPTER) -> list[ParsedEntity]:
    return adapter.parse(message(payload))


def rejected(payload: dict[str, Any] | bytes, adapter: TrafficCounterAdapter = ADAPTER) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        parse(payload, adapter)
    return info.value


def by_id(entities: list[ParsedEntity]) -> dict[str, dict[str, Any]]:
    return {e.entity_id: e.data for e in entities}


def test_the_documented_example() -> None:
    entities = by_id(parse(EXAMPLE))
    when = {
        "dateObserved": "2026-11-20T06:00:00Z/2026-11-20T06:15:00Z",
        "dateObservedFrom": "2026-11-20T06:00:00Z",
        "dateObservedTo": "2026-11-20T06:15:00Z",
        "location": {"type": "Point", "coordinates": [-3.70256, 40.41692]},
        "refRoadSegment": "urn:ngsi-ld:RoadSegment:RS-1",
    }
    assert entities == {
        "urn:ngsi-ld:CrowdFlowObserved:TC-17": {
            "id": "urn:ngsi-ld:CrowdFlowObserved:TC-17",
            "type": "CrowdFlowObserved",
            **when,
            "peopleCount": 21,
            "peopleCountTowards": 12,
            "peopleCountAway": 9,
        },
        "urn:ngsi-ld:TrafficFlowObserved:TC-17": {
            "id": "urn:ngsi-ld:TrafficFlowObserved:TC-17",
            "type": "TrafficFlowObserved",
            **when,
            "intensity": 38,
            "averageVehicleSpeed": 28.4,
        },
        **{
            f"urn:ngsi-ld:TrafficFlowObserved:TC-17-{kind}": {
                "id": f"urn:ngsi-ld:TrafficFlowObserved:TC-17-{kind}",
                "type": "TrafficFlowObserved",
                **when,
                "vehicleType": kind,
                "intensity": n,
            }
            for kind, n in (("car", 31), ("bus", 2), ("bicycle", 5))
        },
    }
    for entity in entities.values():
        assert official_errors(entity) == []
        default_catalog().get(entity["type"]).validate(entity)


def test_summer_and_winter_offsets_of_the_configured_zone() -> None:
    summer = by_id(parse({**EXAMPLE, "from": "2026-07-15T09:00:00", "to": "2026-07-15T09:15:00"}))
    assert summer["urn:ngsi-ld:CrowdFlowObserved:TC-17"]["dateObservedFrom"] == "2026-07-15T07:00:00Z"
    other = by_id(parse({**EXAMPLE, "sensor": "TC-40"}))
    assert other["urn:ngsi-ld:CrowdFlowObserved:TC-40"]["dateObservedFrom"] == "2026-11-20T12:00:00Z"
    assert "location" not in other["urn:ngsi-ld:CrowdFlowObserved:TC-40"]


def test_explicit_offsets_are_honoured_whatever_the_zone() -> None:
    body = {**EXAMPLE, "from": "2026-11-20T06:00:00Z", "to": "2026-11-20T08:15:00+02:00"}
    entity = parse(body)[0].data
    assert (entity["dateObservedFrom"], entity["dateObservedTo"]) == ("2026-11-20T06:00:00Z", "2026-11-20T06:15:00Z")


@pytest.mark.parametrize(
    ("start", "end", "reason"),
    [
        ("2026-10-25T02:30:00", "2026-10-25T02:45:00", "ambiguous_local_time"),  # clocks go back at 03:00
        ("2026-10-25T01:45:00", "2026-10-25T02:00:00", "ambiguous_local_time"),
        ("2026-03-29T02:15:00", "2026-03-29T02:30:00", "nonexistent_local_time"),  # clocks jump 02:00→03:00
        ("2026-11-20T07:15:00", "2026-11-20T07:00:00", "invalid_interval"),
        ("2026-11-20T07:00:00", "2026-11-20T07:00:00", "invalid_interval"),
        ("2026-11-20T07:00:00", "2026-11-22T07:00:00", "out_of_range"),
        ("20/11/2026 07:00", "2026-11-20T07:15:00", "invalid_timestamp"),
        (None, "2026-11-20T07:15:00", "missing_field"),
    ],
)
def test_bad_intervals_are_refused(start: Any, end: Any, reason: str) -> None:
    assert rejected({**EXAMPLE, "from": start, "to": end}).reason == reason


def test_the_intervals_either_side_of_the_ambiguous_hour_are_accepted() -> None:
    # On 2026-10-25 Madrid goes from 03:00 CEST back to 02:00 CET: 02:00-02:59 local happens twice.
    before = parse({**EXAMPLE, "from": "2026-10-25T01:45:00", "to": "2026-10-25T01:59:59"})[0].data
    assert before["dateObserved"] == "2026-10-24T23:45:00Z/2026-10-24T23:59:59Z"
    after = parse({**EXAMPLE, "from": "2026-10-25T03:00:00", "to": "2026-10-25T03:15:00"})[0].data
    assert after["dateObserved"] == "2026-10-25T02:00:00Z/2026-10-25T02:15:00Z"


def test_a_sensor_without_a_zone_is_refused_not_guessed() -> None:
    assert rejected({**EXAMPLE, "sensor": "TC-99"}).reason == "timestamp_without_zone"
    adapter = TrafficCounterAdapter(TrafficCounterConfig(default_zone="Europe/Lisbon"))
    entity = parse({**EXAMPLE, "sensor": "TC-99"}, adapter)[0].data
    assert entity["dateObservedFrom"] == "2026-11-20T07:00:00Z"
    assert "location" not in entity and "refRoadSegment" not in entity


def test_no_config_at_all_still_accepts_timestamps_with_offsets() -> None:
    adapter = TrafficCounterAdapter()
    body = {**EXAMPLE, "from": "2026-11-20T07:00:00+01:00", "to": "2026-11-20T07:15:00+01:00"}
    assert parse(body, adapter)[0].data["dateObservedFrom"] == "2026-11-20T06:00:00Z"
    assert rejected(EXAMPLE, adapter).reason == "timestamp_without_zone"


IDENTIFYING: dict[str, Any] = {
    "licence_plates": ["1234KLM", "5678BCD"],
    "plates": "9999ZZZ",
    "face_id": "face-8812a",
    "device_ids": ["a4:5e:60:d1:22:9f"],
    "mac": "3c:22:fb:10:7a:01",
    "bluetooth": {"ids": ["bt-77a1c0"], "rssi": [-71]},
    "imsi": ["214011234567890"],
}


def test_identifying_fields_are_removed_and_named_never_stored() -> None:
    body = copy.deepcopy(EXAMPLE)
    body.update(IDENTIFYING)
    body["pedestrians"]["face_ids"] = ["f-0091bb"]
    body["vehicles"]["plates"] = ["7777QQQ"]
    entities = parse(body)
    expected = tuple(sorted([*IDENTIFYING, "pedestrians.face_ids", "vehicles.plates"]))
    assert len(entities) == 5
    for entity in entities:
        assert entity.removed_fields == expected
    dumped = orjson.dumps([e.data for e in entities]).decode()
    for secret in (
        "1234KLM",
        "9999ZZZ",
        "face-8812a",
        "a4:5e:60",
        "3c:22:fb",
        "bt-77a1c0",
        "2140112345",
        "f-0091bb",
        "7777QQQ",
    ):
        assert secret not in dumped
    # the counts themselves are unchanged by the removal
    assert by_id(entities)["urn:ngsi-ld:TrafficFlowObserved:TC-17"]["intensity"] == 38


def test_keys_that_are_themselves_identifiers_are_not_echoed_as_names() -> None:
    body = copy.deepcopy(EXAMPLE)
    body["vehicles"]["1234 KLM"] = 1
    body["a4:5e:60:d1:22:9f"] = -71
    entities = parse(body)
    assert entities[0].removed_fields == ("<unnamed key>", "vehicles.<unnamed key>")
    assert "1234 KLM" not in repr(entities) and "a4:5e:60" not in repr(entities)


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"pedestrians": {"in": -1, "out": 9}}, "out_of_range", "pedestrians.in"),
        ({"pedestrians": {"in": 12, "out": "9"}}, "wrong_type", "pedestrians.out"),
        ({"pedestrians": {"in": 12.5, "out": 9}}, "wrong_type", "pedestrians.in"),
        ({"pedestrians": {"in": True, "out": 9}}, "wrong_type", "pedestrians.in"),
        ({"pedestrians": {"in": 12}}, "missing_field", "pedestrians.out"),
        ({"pedestrians": [12, 9]}, "wrong_type", "pedestrians"),
        ({"vehicles": {"car": -31}}, "out_of_range", "vehicles.car"),
        ({"vehicles": {"car": 31.0}}, "wrong_type", "vehicles.car"),
        ({"vehicles": "31"}, "wrong_type", "vehicles"),
        ({"vehicles": {"truck": 1, "lorry": 2}}, "duplicate_field", "vehicles"),
        ({"avg_speed_kmh": -3}, "out_of_range", "avg_speed_kmh"),
        ({"avg_speed_kmh": 999}, "out_of_range", "avg_speed_kmh"),
        ({"avg_speed_kmh": "28.4"}, "wrong_type", "avg_speed_kmh"),
        ({"sensor": None}, "missing_field", "sensor"),
        ({"sensor": "TC 17/../x"}, "invalid_id", "sensor"),
        ({"pedestrians": None, "vehicles": None}, "missing_field", "vehicles"),
        ({"pedestrians": None, "vehicles": {"plates": ["1"]}, "avg_speed_kmh": None}, "missing_field", "vehicles"),
        ({"pedestrians": {"in": 1, "out": 1}, "vehicles": None}, "missing_field", "avg_speed_kmh"),
    ],
)
def test_bad_counts_are_refused(changes: dict[str, Any], reason: str, field: str) -> None:
    error = rejected({**EXAMPLE, **changes})
    assert (error.reason, error.field) == (reason, field)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"sensor": "TC-17", "from": "2026-11-20T07:00:00", "pedestrians": {"in": 12,', "invalid_json"),
        (b'{"sensor": "TC-17", "pedestrians": {"in": NaN, "out": 1}}', "invalid_json"),
        (b'{"sensor": "TC-\xe917"}', "not_utf8"),
        (b"[1, 2]", "invalid_json"),
    ],
)
def test_malformed_bytes_are_refused(payload: bytes, reason: str) -> None:
    assert rejected(payload).reason == reason


def test_pedestrian_only_and_vehicle_only_counters() -> None:
    walkers = parse({k: v for k, v in EXAMPLE.items() if k not in ("vehicles", "avg_speed_kmh")})
    assert [e.entity_type for e in walkers] == ["CrowdFlowObserved"]
    cars = parse({**EXAMPLE, "pedestrians": None, "vehicles": {"truck": 2, "van": 0}})
    assert sorted(e.entity_id for e in cars) == [
        "urn:ngsi-ld:TrafficFlowObserved:TC-17",
        "urn:ngsi-ld:TrafficFlowObserved:TC-17-lorry",
        "urn:ngsi-ld:TrafficFlowObserved:TC-17-van",
    ]
    for entity in (*walkers, *cars):
        assert official_errors(entity.data) == []


def test_zero_counts_are_observations_too() -> None:
    entities = by_id(parse({**EXAMPLE, "pedestrians": {"in": 0, "out": 0}, "vehicles": {"car": 0}}))
    assert entities["urn:ngsi-ld:CrowdFlowObserved:TC-17"]["peopleCount"] == 0
    assert entities["urn:ngsi-ld:TrafficFlowObserved:TC-17-car"]["intensity"] == 0


@pytest.mark.parametrize(
    "config",
    [
        {"default_zone": "Mars/Olympus"},
        {"sources": {"TC-1": {"zone": "Europe/Madird"}}},
        {"sources": {"TC-1": {"location": [40.4, -300]}}},
        {"sources": {"TC-1": {"zone": "Europe/Madrid", "plates": True}}},
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigurationError):
        load_config(TrafficCounterConfig, path)
