"""The ugly cases of the lighting management system feed."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import load_config
from adapters.streetlight_json import FAULT_STATUS, StreetlightJsonAdapter, StreetlightJsonConfig
from governance.catalog import default_catalog
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage
from tests.smart_data_models import official_errors

CONFIG = StreetlightJsonConfig.model_validate(
    {
        "cabinets": {
            "CAB-0042": {"location": [-3.70325, 40.4165]},
            "CAB-0107": {"location": [-3.6918, 40.4231], "groups": ["G-N", "G-S"], "working_mode": "manual"},
        },
        "lamps": {
            "L-0042-07": {"location": [-3.70341, 40.41668]},
            "L-0107-01": {"location": [-3.69201, 40.42355], "group": "G-N"},
        },
    }
)
ADAPTER = StreetlightJsonAdapter(CONFIG)

EXAMPLE: dict[str, Any] = {
    "cabinet": "CAB-0042",
    "ts": 1763971200000,
    "lamps": [{"id": "L-0042-07", "state": "ON", "dim": 70, "power_w": 38.5, "energy_wh": 123456, "fault": None}],
    "cabinet_kwh": 5321.7,
}


def message(payload: dict[str, Any] | bytes) -> RawMessage:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return RawMessage(payload=raw, source="test", received_at=datetime(2025, 11, 24, 8, 1, tzinfo=UTC), topic="cms/x")


def parse(payload: dict[str, Any] | bytes, adapter: StreetlightJsonAdapter = ADAPTER) -> list[ParsedEntity]:
    return adapter.parse(message(payload))


def with_lamp(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    body["lamps"][0].update(changes)
    return body


def rejected(payload: dict[str, Any] | bytes, adapter: StreetlightJsonAdapter = ADAPTER) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        parse(payload, adapter)
    return info.value


def test_the_documented_example_maps_to_official_entities() -> None:
    lamp, cabinet = (e.data for e in parse(EXAMPLE))
    assert lamp == {
        "id": "urn:ngsi-ld:Streetlight:L-0042-07",
        "type": "Streetlight",
        "status": "ok",
        "powerState": "on",
        "illuminanceLevel": 0.7,
        "powerConsumption": 38.5,
        "lifetimePowerConsumption": 123.456,
        "refStreetlightControlCabinet": "urn:ngsi-ld:StreetlightControlCabinet:CAB-0042",
        "refStreetlightGroup": "urn:ngsi-ld:StreetlightGroup:CAB-0042",
        "location": {"type": "Point", "coordinates": [-3.70341, 40.41668]},
        "observationDateTime": "2025-11-24T08:00:00Z",
    }
    assert cabinet == {
        "id": "urn:ngsi-ld:StreetlightControlCabinet:CAB-0042",
        "type": "StreetlightControlCabinet",
        "location": {"type": "Point", "coordinates": [-3.70325, 40.4165]},
        "refStreetlightGroup": ["urn:ngsi-ld:StreetlightGroup:CAB-0042"],
        "workingMode": "automatic",
        "dateModified": "2025-11-24T08:00:00Z",
        "energyConsumed": 5321.7,
    }
    assert official_errors(lamp) == []
    assert official_errors(cabinet) == []
    for entity in (lamp, cabinet):
        default_catalog().get(entity["type"]).validate(entity)


@pytest.mark.parametrize(
    "ts",
    [1763971200000, 1763971200, 1763971200.0, "2025-11-24T08:00:00Z", "2025-11-24T09:00:00+01:00"],
)
def test_timestamp_forms_give_the_same_utc_instant(ts: Any) -> None:
    body = {**EXAMPLE, "ts": ts}
    assert parse(body)[0].data["observationDateTime"] == "2025-11-24T08:00:00Z"


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("2025-11-24T08:00:00", "timestamp_without_zone"),
        ("yesterday", "invalid_timestamp"),
        (True, "wrong_type"),
        (None, "missing_field"),
        (1e300, "invalid_timestamp"),
    ],
)
def test_bad_timestamps_are_refused(ts: Any, reason: str) -> None:
    assert rejected({**EXAMPLE, "ts": ts}).reason == reason


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"dim": "70"}, "wrong_type", "lamps[0].dim"),
        ({"dim": True}, "wrong_type", "lamps[0].dim"),
        ({"dim": 100.5}, "out_of_range", "lamps[0].dim"),
        ({"dim": -1}, "out_of_range", "lamps[0].dim"),
        ({"power_w": -0.1}, "out_of_range", "lamps[0].power_w"),
        ({"power_w": 25000}, "out_of_range", "lamps[0].power_w"),
        ({"power_w": [38.5]}, "wrong_type", "lamps[0].power_w"),
        ({"energy_wh": "123456"}, "wrong_type", "lamps[0].energy_wh"),
        ({"energy_wh": -5}, "out_of_range", "lamps[0].energy_wh"),
        ({"state": 1}, "wrong_type", "lamps[0].state"),
        ({"state": "FLICKER"}, "unknown_state", "lamps[0].state"),
        ({"state": None}, "missing_field", "lamps[0].state"),
        ({"state": ""}, "missing_field", "lamps[0].state"),
        ({"fault": 3}, "wrong_type", "lamps[0].fault"),
        ({"fault": "arc_flash"}, "unknown_fault", "lamps[0].fault"),
        ({"id": None}, "missing_field", "lamps[0].id"),
        ({"id": 42}, "wrong_type", "lamps[0].id"),
        ({"id": "L 0042/07"}, "invalid_id", "lamps[0].id"),
        ({"id": "L" * 101}, "invalid_id", "lamps[0].id"),
    ],
)
def test_bad_lamp_fields_are_refused_naming_the_field(changes: dict[str, Any], reason: str, field: str) -> None:
    error = rejected(with_lamp(**changes))
    assert (error.reason, error.field) == (reason, field)
    assert field in error.detail


def test_missing_fault_key_is_not_taken_as_no_fault() -> None:
    body = copy.deepcopy(EXAMPLE)
    del body["lamps"][0]["fault"]
    error = rejected(body)
    assert (error.reason, error.field) == ("missing_field", "lamps[0].fault")


def test_one_bad_lamp_refuses_the_whole_message() -> None:
    body = copy.deepcopy(EXAMPLE)
    body["lamps"].append({"id": "L-0042-08", "state": "ON", "dim": "full", "fault": None})
    error = rejected(body)
    assert error.field == "lamps[1].dim"


@pytest.mark.parametrize(("fault", "status"), [(None, "ok"), *sorted(FAULT_STATUS.items())])
def test_every_known_fault_maps_to_an_official_status(fault: str | None, status: str) -> None:
    lamp = parse(with_lamp(fault=fault))[0].data
    assert lamp["status"] == status
    assert official_errors(lamp) == []


def test_fault_codes_are_matched_case_insensitively() -> None:
    assert parse(with_lamp(fault="LAMP_FAILURE"))[0].data["status"] == "defectiveLamp"


def test_configured_fault_codes_extend_the_table() -> None:
    config = CONFIG.model_copy(update={"fault_status": {"Lamp_Cycling": "defectiveLamp"}})
    adapter = StreetlightJsonAdapter(config)
    assert parse(with_lamp(fault="lamp_cycling"), adapter)[0].data["status"] == "defectiveLamp"
    assert rejected(with_lamp(fault="lamp_cycling")).reason == "unknown_fault"


def test_unknown_fault_detail_names_the_field_and_truncates_the_value() -> None:
    error = rejected(with_lamp(fault="x" * 500))
    assert "lamps[0].fault" in error.detail
    assert "x" * 41 not in error.detail


def test_communication_fault_does_not_carry_stale_readings() -> None:
    (lamp, _cabinet) = parse(with_lamp(fault="communication", state="ON", dim=70, power_w=None))
    assert lamp.data["status"] == "brokenLantern"
    for prop in ("powerState", "illuminanceLevel", "powerConsumption", "lifetimePowerConsumption"):
        assert prop not in lamp.data
    assert set(lamp.removed_fields) == {"lamps[].state", "lamps[].dim", "lamps[].energy_wh"}
    assert official_errors(lamp.data) == []


def test_communication_fault_accepts_null_readings() -> None:
    body = with_lamp(fault="communication", state=None, dim=None, power_w=None, energy_wh=None)
    (lamp, _cabinet) = parse(body)
    assert lamp.removed_fields == ()
    assert "powerState" not in lamp.data


def test_null_optional_readings_are_left_out_not_zeroed() -> None:
    lamp = parse(with_lamp(dim=None, power_w=None, energy_wh=None))[0].data
    assert "illuminanceLevel" not in lamp and "powerConsumption" not in lamp
    assert "lifetimePowerConsumption" not in lamp


@pytest.mark.parametrize(
    ("state", "power_state"), [("ON", "on"), ("off", "off"), ("Low", "low"), ("BOOTING", "bootingUp")]
)
def test_power_states(state: str, power_state: str) -> None:
    assert parse(with_lamp(state=state))[0].data["powerState"] == power_state


def test_units_are_converted_without_binary_noise() -> None:
    lamp = parse(with_lamp(dim=33.3, energy_wh=5120.5, power_w=17.45))[0].data
    assert lamp["illuminanceLevel"] == 0.333
    assert lamp["lifetimePowerConsumption"] == 5.1205
    assert lamp["powerConsumption"] == 17.45


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        ({**EXAMPLE, "lamps": []}, "missing_field", "lamps"),
        ({**EXAMPLE, "lamps": {"L-1": {}}}, "wrong_type", "lamps"),
        ({**EXAMPLE, "lamps": ["L-0042-07"]}, "wrong_type", "lamps"),
        ({k: v for k, v in EXAMPLE.items() if k != "lamps"}, "missing_field", "lamps"),
        ({k: v for k, v in EXAMPLE.items() if k != "cabinet"}, "missing_field", "cabinet"),
        ({**EXAMPLE, "cabinet": "CAB-9999"}, "unknown_cabinet", "cabinet"),
        ({**EXAMPLE, "cabinet_kwh": -1}, "out_of_range", "cabinet_kwh"),
        ({**EXAMPLE, "cabinet_kwh": "5321.7"}, "wrong_type", "cabinet_kwh"),
    ],
)
def test_bad_messages_are_refused(body: dict[str, Any], reason: str, field: str) -> None:
    error = rejected(body)
    assert (error.reason, error.field) == (reason, field)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"cabinet": "CAB-0042", "ts": 1763971200000, "lamps": [', "invalid_json"),
        (b"", "invalid_json"),
        (b"[]", "invalid_json"),
        (b'"CAB-0042"', "invalid_json"),
        (b'{"cabinet": "CAB-0042", "ts": 1763971200000, "lamps": [], "cabinet_kwh": NaN}', "invalid_json"),
        (b'{"cabinet": "CAB-0042", "ts": 1763971200000, "lamps": [], "cabinet_kwh": 1e999}', "invalid_json"),
        (b'{"cabinet": "CAB-\xff0042"}', "not_utf8"),
        ('{"cabinet": "CAB-0042", "lamps": "caf\u00e9"}'.encode("latin-1"), "not_utf8"),
    ],
)
def test_malformed_bytes_are_refused(payload: bytes, reason: str) -> None:
    assert rejected(payload).reason == reason


def test_duplicate_lamp_ids_are_refused() -> None:
    body = copy.deepcopy(EXAMPLE)
    body["lamps"].append(dict(body["lamps"][0], dim=20))
    error = rejected(body)
    assert (error.reason, error.field) == ("duplicate_lamp", "lamps[1].id")


def test_lamp_without_own_location_takes_the_cabinet_location() -> None:
    body = with_lamp(id="L-0042-99")
    assert parse(body)[0].data["location"] == {"type": "Point", "coordinates": [-3.70325, 40.4165]}


def test_groups_are_not_guessed_when_a_cabinet_switches_several() -> None:
    body = {
        "cabinet": "CAB-0107",
        "ts": 1763971200000,
        "lamps": [
            {"id": "L-0107-01", "state": "ON", "dim": 50, "fault": None},
            {"id": "L-0107-02", "state": "ON", "dim": 50, "fault": None},
        ],
    }
    configured, unconfigured, cabinet = (e.data for e in parse(body))
    assert configured["refStreetlightGroup"] == "urn:ngsi-ld:StreetlightGroup:G-N"
    assert "refStreetlightGroup" not in unconfigured
    assert cabinet["refStreetlightGroup"] == ["urn:ngsi-ld:StreetlightGroup:G-N", "urn:ngsi-ld:StreetlightGroup:G-S"]
    assert cabinet["workingMode"] == "manual"
    assert "energyConsumed" not in cabinet
    for entity in (configured, unconfigured, cabinet):
        assert official_errors(entity) == []


def test_unknown_input_keys_are_named_not_copied() -> None:
    body = with_lamp(firmware="2.1.4-secret")
    body["gateway"] = "gw-madrid-03"
    lamp, cabinet = parse(body)
    assert lamp.removed_fields == ("lamps[].firmware",)
    assert cabinet.removed_fields == ("gateway",)
    dumped = orjson.dumps([lamp.data, cabinet.data])
    assert b"2.1.4-secret" not in dumped and b"gw-madrid-03" not in dumped


def test_ten_thousand_lamps() -> None:
    lamps = [
        {"id": f"L-0042-{i:05d}", "state": "ON", "dim": i % 101, "power_w": 30.0, "energy_wh": i, "fault": None}
        for i in range(10_000)
    ]
    body = {**EXAMPLE, "lamps": lamps}
    started = time.perf_counter()
    entities = parse(body)
    elapsed = time.perf_counter() - started
    assert len(entities) == 10_001
    assert len({e.entity_id for e in entities}) == 10_001
    assert entities[-1].entity_type == "StreetlightControlCabinet"
    assert entities[100].data["illuminanceLevel"] == 1.0
    for entity in (entities[0], entities[5000], entities[-1]):
        assert official_errors(entity.data) == []
    assert elapsed < 5, f"10,000 lamps took {elapsed:.1f} s"


def test_configuration_is_required() -> None:
    with pytest.raises(ConfigurationError):
        StreetlightJsonAdapter()


@pytest.mark.parametrize(
    "config",
    [
        {"cabinets": {"CAB-1": {"location": [-300, 40]}}},
        {"cabinets": {"CAB-1": {"location": [-3.7]}}},
        {"cabinets": {"CAB-1": {"location": [-3.7, 40.4], "working_mode": "auto"}}},
        {"cabinets": {"CAB-1": {"location": [-3.7, 40.4], "groups": ["G-1", "G-1"]}}},
        {"cabinets": {"CAB-1": {"location": [-3.7, 40.4], "groups": ["G 1"]}}},
        {"fault_status": {"lamp_cycling": "broken"}},
        {"cabinet": {}},
    ],
)
def test_bad_configuration_is_refused(tmp_path: Path, config: dict[str, Any]) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ConfigurationError):
        load_config(StreetlightJsonConfig, path)
