"""UltraLight 2.0 adapter: provisioning, topics, measure syntax, units, times and the ugly cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from adapters.base import load_config
from adapters.ultralight import UltraLightAdapter, UltraLightConfig
from adapters.units import QUANTITIES, measure_rule, parse_decimal
from governance.catalog import default_catalog
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import RawMessage
from tests.adapters.validity import assert_valid

RECEIVED = datetime(2026, 3, 2, 9, 30, 15, 250000, tzinfo=UTC)
AQ_KEY = "aqkey01"
NOISE_KEY = "noisekey02"
HERE = [-3.7074, 40.4155]


def _attr(object_id: str, name: str, unit: str | None = None, type_: str = "Number") -> dict[str, Any]:
    attr: dict[str, Any] = {"object_id": object_id, "name": name, "type": type_}
    if unit is not None:
        attr["metadata"] = {"unitCode": {"type": "Text", "value": unit}}
    return attr


def _location(coords: list[float] = HERE) -> dict[str, Any]:
    return {"name": "location", "type": "geo:json", "value": {"type": "Point", "coordinates": coords}}


def provisioning(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "services": [
            {
                "apikey": AQ_KEY,
                "entity_type": "AirQualityObserved",
                "resource": "/iot/d",
                "cbroker": "http://orion:1026",
                "attributes": [
                    _attr("t", "temperature", "CEL"),
                    _attr("h", "relativeHumidity", "P1"),
                    _attr("pm25", "pm25", "GQ"),
                    _attr("co", "co", "GQ"),
                    {"object_id": "ts", "name": "TimeInstant", "type": "DateTime"},
                ],
            },
            {
                "apikey": NOISE_KEY,
                "entity_type": "NoiseLevelObserved",
                "observation_window": {"seconds": 300, "time_marks": "end"},
                "attributes": [_attr("laeq", "LAeq", "2N"), _attr("lamax", "LAmax")],
            },
        ],
        "devices": [
            {"device_id": "aq1", "apikey": AQ_KEY, "timezone": "Europe/Madrid", "static_attributes": [_location()]},
            {
                "device_id": "aq-us",
                "apikey": AQ_KEY,
                "entity_name": "urn:ngsi-ld:AirQualityObserved:station-us",
                "attributes": [_attr("t", "temperature", "FAH")],
                "static_attributes": [_location(), {"name": "name", "type": "Text", "value": "US station"}],
            },
            {"device_id": "nz1", "apikey": NOISE_KEY, "static_attributes": [_location()]},
        ],
    }
    doc.update(overrides)
    return doc


def adapter(doc: dict[str, Any] | None = None) -> UltraLightAdapter:
    return UltraLightAdapter(UltraLightConfig.model_validate(doc or provisioning()))


def message(payload: str | bytes, topic: str | None = f"/ul/{AQ_KEY}/aq1/attrs") -> RawMessage:
    body = payload.encode("utf-8") if isinstance(payload, str) else payload
    return RawMessage(payload=body, source="test", received_at=RECEIVED, topic=topic)


def parse(
    payload: str | bytes, topic: str | None = f"/ul/{AQ_KEY}/aq1/attrs", doc: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    return [e.data for e in adapter(doc).parse(message(payload, topic))]


def rejected(payload: str | bytes, topic: str | None = f"/ul/{AQ_KEY}/aq1/attrs") -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        adapter().parse(message(payload, topic))
    assert info.value.detail
    return info.value


# -- mapping ---------------------------------------------------------------------------------------


def test_measures_become_one_entity_in_schema_units() -> None:
    (entity,) = parse("t|21.4|h|56|pm25|12.5")
    assert entity == {
        "id": "urn:ngsi-ld:AirQualityObserved:aq1",
        "type": "AirQualityObserved",
        "dateObserved": "2026-03-02T09:30:15.250Z",
        "location": {"type": "Point", "coordinates": HERE},
        "temperature": 21.4,
        "relativeHumidity": 0.56,
        "pm25": 12.5,
        "refDevice": "urn:ngsi-ld:Device:aq1",
    }
    assert_valid(entity)


def test_fahrenheit_device_is_converted_and_overrides_the_group_attribute() -> None:
    (entity,) = parse("t|95|pm25|3", topic=f"/ul/{AQ_KEY}/aq-us/attrs")
    assert entity["temperature"] == 35.0
    assert entity["id"] == "urn:ngsi-ld:AirQualityObserved:station-us"
    assert entity["name"] == "US station"
    assert entity["refDevice"] == "urn:ngsi-ld:Device:aq-us"
    (cold,) = parse("t|-40", topic=f"/ul/{AQ_KEY}/aq-us/attrs")
    assert cold["temperature"] == -40.0
    assert_valid(entity)


def test_percent_to_fraction_has_no_float_noise() -> None:
    (entity,) = parse("h|55.3")
    assert entity["relativeHumidity"] == 0.553


def test_integers_stay_integers_and_exponents_are_numbers() -> None:
    (entity,) = parse("pm25|8|co|1.5e3")
    assert entity["pm25"] == 8 and isinstance(entity["pm25"], int)
    assert entity["co"] == 1.5  # provisioned in µg/m³ (GQ); the model's co is in mg/m³ (GP)


def test_noise_window_ends_at_the_message_time() -> None:
    (entity,) = parse("laeq|61.2|lamax|77", topic=f"/ul/{NOISE_KEY}/nz1/attrs")
    assert entity["dateObservedFrom"] == "2026-03-02T09:25:15.250Z"
    assert entity["dateObservedTo"] == "2026-03-02T09:30:15.250Z"
    assert entity["dateObserved"] == "2026-03-02T09:25:15.250Z/2026-03-02T09:30:15.250Z"
    assert "dateObservedFrom" in entity and "LAmax" in entity
    assert_valid(entity)


def test_noise_window_can_start_at_the_message_time() -> None:
    doc = provisioning()
    doc["services"][1]["observation_window"] = {"seconds": 60, "time_marks": "start"}
    (entity,) = parse("laeq|61.2", topic=f"/ul/{NOISE_KEY}/nz1/attrs", doc=doc)
    assert entity["dateObservedFrom"] == "2026-03-02T09:30:15.250Z"
    assert entity["dateObservedTo"] == "2026-03-02T09:31:15.250Z"


def test_weather_with_every_unit_conversion() -> None:
    doc = {
        "services": [
            {
                "apikey": "wx",
                "entity_type": "WeatherObserved",
                "attributes": [
                    _attr("p", "atmosphericPressure", "PAL"),
                    _attr("ws", "windSpeed", "KNT"),
                    _attr("wd", "windDirection", "DD"),
                    _attr("r", "precipitation", "INH"),
                    _attr("k", "dewPoint", "KEL"),
                ],
            }
        ],
        "devices": [{"device_id": "w1", "static_attributes": [_location()]}],
    }
    (entity,) = parse("p|101325|ws|10|wd|359|r|1|k|273.15", topic="/ul/wx/w1/attrs", doc=doc)
    assert entity["atmosphericPressure"] == 1013.25
    assert entity["windSpeed"] == 5.144444
    assert entity["windDirection"] == 359
    assert entity["precipitation"] == 25.4
    assert entity["dewPoint"] == 0.0
    assert_valid(entity)


# -- times -----------------------------------------------------------------------------------------


def test_leading_timestamp_per_group_and_groups_in_order() -> None:
    entities = parse("2026-03-02T09:00:00Z|pm25|10#2026-03-02T10:15:00+01:00|pm25|11")
    assert [(e["dateObserved"], e["pm25"]) for e in entities] == [
        ("2026-03-02T09:00:00Z", 10),
        ("2026-03-02T09:15:00Z", 11),
    ]


def test_groups_without_time_merge_into_one_observation() -> None:
    (entity,) = parse("t|20#pm25|7")
    assert entity["temperature"] == 20 and entity["pm25"] == 7
    assert entity["dateObserved"] == "2026-03-02T09:30:15.250Z"


def test_same_property_twice_at_one_time_is_refused() -> None:
    assert rejected("pm25|7#pm25|8").reason == "conflicting_values"
    assert len(parse("pm25|7#pm25|7")) == 1  # the same value twice is no conflict


def test_local_timestamp_uses_the_device_zone() -> None:
    (entity,) = parse("2026-03-02T10:00:00|pm25|10")  # aq1 is in Europe/Madrid (UTC+1 in March)
    assert entity["dateObserved"] == "2026-03-02T09:00:00Z"


def test_local_timestamp_without_a_zone_is_refused() -> None:
    err = rejected("2026-03-02T10:00:00|pm25|10", topic=f"/ul/{AQ_KEY}/aq-us/attrs")
    assert err.reason == "timestamp_without_zone"


def test_time_instant_attribute_sets_the_time() -> None:
    (entity,) = parse("ts|2026-03-02T08:00:00Z|pm25|4")
    assert entity["dateObserved"] == "2026-03-02T08:00:00Z"
    assert "TimeInstant" not in entity and "ts" not in entity


def test_two_different_times_in_one_group_are_refused() -> None:
    assert rejected("2026-03-02T08:00:00Z|ts|2026-03-02T08:05:00Z|pm25|4").reason == "conflicting_values"


def test_bad_timestamps() -> None:
    assert rejected("2026-13-02T08:00:00Z|pm25|4").reason == "invalid_timestamp"
    assert rejected("ts|yesterday|pm25|4").reason == "invalid_timestamp"
    assert rejected("2026-03-29T02:30:00|pm25|4").reason == "nonexistent_local_time"


# -- syntax ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    ["", "t", "t|21|h", "t||h|5", "t|21|", "|", "t|21#", "#t|21", "t|21|t|22", "t|1#" + "t|1#" * 100 + "t|1"],
)
def test_malformed_ultralight_is_ul_syntax(payload: str) -> None:
    assert rejected(payload).reason == "ul_syntax"


def test_leading_bar_and_trailing_newline_are_tolerated_as_the_iot_agent_does() -> None:
    (entity,) = parse("|t|21\r\n")
    assert entity["temperature"] == 21


@pytest.mark.parametrize("value", ["warm", "nan", "inf", "-inf", "0x1A", "1,5", "1.2.3", "++1", "9" * 41])
def test_non_numbers_are_wrong_type(value: str) -> None:
    err = rejected(f"t|{value}")
    assert err.reason == "wrong_type"
    assert err.field == "t"


def test_out_of_range_values() -> None:
    err = rejected("h|140")
    assert err.reason == "out_of_range" and "140 P1" in err.detail and "1.4 C62" in err.detail
    assert rejected("pm25|-1").reason == "out_of_range"
    assert rejected("t|500").reason == "out_of_range"
    assert rejected("t|212", topic=f"/ul/{AQ_KEY}/aq-us/attrs").reason == "out_of_range"  # 100 °C in the air
    assert rejected("pm25|1e999").reason == "out_of_range"  # infinity


def test_not_utf8() -> None:
    assert rejected(b"t|21\xb0C").reason == "not_utf8"


# -- routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [f"/ul/{AQ_KEY}/aq1/attrs", f"/{AQ_KEY}/aq1/attrs", f"{AQ_KEY}/aq1/attrs"])
def test_topic_forms_of_the_iot_agent(topic: str) -> None:
    (entity,) = parse("pm25|3", topic=topic)
    assert entity["pm25"] == 3


def test_single_measure_topic() -> None:
    (entity,) = parse("12.5", topic=f"/ul/{AQ_KEY}/aq1/attrs/pm25")
    assert entity["pm25"] == 12.5
    assert rejected("t|3", topic=f"/ul/{AQ_KEY}/aq1/attrs/pm25").reason == "ul_syntax"
    assert rejected("3", topic=f"/ul/{AQ_KEY}/aq1/attrs/co2").reason == "unknown_attribute"


def test_unknown_apikey_device_and_attribute() -> None:
    assert rejected("t|1", topic="/ul/nokey/aq1/attrs").reason == "unknown_apikey"
    err = rejected("t|1", topic=f"/ul/{AQ_KEY}/ghost/attrs")
    assert err.reason == "unknown_device" and "ghost" in err.detail
    # a device provisioned under another API key is not found under this one
    assert rejected("laeq|50", topic=f"/ul/{AQ_KEY}/nz1/attrs").reason == "unknown_device"
    err = rejected("t|21|co2|415")
    assert err.reason == "unknown_attribute" and err.field == "co2"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (None, "missing_field"),
        ("", "missing_field"),
        (f"/ul/{AQ_KEY}/aq1/cmdexe", "not_a_measure"),
        (f"/{AQ_KEY}/aq1/cmd", "not_a_measure"),
        (f"/ul/{AQ_KEY}/aq1/configuration/commands", "not_a_measure"),
        (f"/ul/{AQ_KEY}/aq1", "invalid_topic"),
        (f"/ul/{AQ_KEY}//attrs", "invalid_topic"),
        ("/json/key/dev/attrs/x/y", "invalid_topic"),
        ("sensors/temperature", "invalid_topic"),
    ],
)
def test_topics_that_are_not_measures(topic: str | None, reason: str) -> None:
    assert rejected("t|1", topic=topic).reason == reason


# -- provisioning ----------------------------------------------------------------------------------


def _config_error(doc: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "provisioning.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_config(UltraLightConfig, path)
    return str(info.value)


def test_sample_provisioning_file_loads(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "adapters" / "samples" / "ultralight" / "config.json"
    adapter_ = UltraLightAdapter.from_config_file(sample)
    assert isinstance(adapter_, UltraLightAdapter)


def test_adapter_requires_a_provisioning_file() -> None:
    with pytest.raises(ConfigurationError):
        UltraLightAdapter()


def test_unconvertible_unit_is_refused(tmp_path: Path) -> None:
    doc = provisioning()
    doc["services"][0]["attributes"].append(_attr("no2", "no2", "59"))  # ppm: depends on the gas
    assert "cannot be converted" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"][0]["attributes"][0]["metadata"]["unitCode"]["value"] = 5
    assert "UN/CEFACT" in _config_error(doc, tmp_path)


def test_unknown_property_and_unmapped_types_are_refused(tmp_path: Path) -> None:
    doc = provisioning()
    doc["services"][0]["attributes"].append(_attr("x", "temprature"))
    assert "temprature" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"][0]["attributes"].append(_attr("s", "pm25text", type_="Text"))
    assert "only Number attributes" in _config_error(doc, tmp_path)


def test_device_without_location_is_refused(tmp_path: Path) -> None:
    doc = provisioning()
    doc["devices"][0]["static_attributes"] = []
    assert "location" in _config_error(doc, tmp_path)


def test_bad_locations_are_refused(tmp_path: Path) -> None:
    doc = provisioning()
    doc["devices"][0]["static_attributes"] = [_location([40.4, -200.0])]
    assert "longitude, latitude" in _config_error(doc, tmp_path)
    doc["devices"][0]["static_attributes"] = [{"name": "location", "type": "geo:point", "value": "north"}]
    assert "geo:point" in _config_error(doc, tmp_path)


def test_geo_point_is_latitude_first() -> None:
    doc = provisioning()
    doc["devices"][0]["static_attributes"] = [{"name": "location", "type": "geo:point", "value": "40.4155, -3.7074"}]
    (entity,) = parse("t|1", doc=doc)
    assert entity["location"] == {"type": "Point", "coordinates": [-3.7074, 40.4155]}


def test_noise_needs_an_observation_window(tmp_path: Path) -> None:
    doc = provisioning()
    del doc["services"][1]["observation_window"]
    assert "observation_window" in _config_error(doc, tmp_path)


def test_ambiguous_provisioning_is_refused(tmp_path: Path) -> None:
    doc = provisioning()
    del doc["devices"][0]["apikey"]  # two service groups: which one?
    assert "no apikey" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"][0]["attributes"].append(_attr("temp", "temperature"))
    assert "both map to" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"].append(doc["services"][0])
    assert "twice" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"][0]["entity_type"] = None
    assert "no entity_type" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["services"][0]["entity_type"] = "Streetlight"
    _config_error(doc, tmp_path)


def test_expressions_and_unknown_fields_are_refused_not_ignored(tmp_path: Path) -> None:
    doc = provisioning()
    doc["services"][0]["attributes"][0]["expression"] = "t * 2"
    assert "expression" in _config_error(doc, tmp_path)


def test_static_attributes_are_checked(tmp_path: Path) -> None:
    doc = provisioning()
    doc["devices"][0]["static_attributes"].append({"name": "typeofLocation", "type": "Text", "value": "inside"})
    assert "indoor, outdoor" in _config_error(doc, tmp_path)
    doc = provisioning()
    doc["devices"][0]["static_attributes"].append({"name": "owner", "type": "Text", "value": "me"})
    assert "not a static property" in _config_error(doc, tmp_path)


def test_device_with_only_a_time_attribute_is_refused(tmp_path: Path) -> None:
    doc = {
        "services": [
            {
                "apikey": "k",
                "entity_type": "WeatherObserved",
                "attributes": [_attr("ts", "TimeInstant", type_="DateTime")],
            }
        ],
        "devices": [{"device_id": "d", "static_attributes": [_location()]}],
    }
    assert "no measured attribute" in _config_error(doc, tmp_path)


def test_model_validation_raises_for_direct_construction() -> None:
    doc = provisioning()
    doc["devices"][0]["static_attributes"] = []
    with pytest.raises(ValidationError):
        UltraLightConfig.model_validate(doc)


# -- shared quantity table -------------------------------------------------------------------------


def test_quantities_use_the_units_of_the_project_schemas() -> None:
    catalog = default_catalog()
    for entity_type, props in QUANTITIES.items():
        units = catalog.get(entity_type).units
        for prop, quantity in props.items():
            assert units.get(prop) == quantity.unit, f"{entity_type}.{prop}"


def test_measure_rule_refuses_unknown_types() -> None:
    with pytest.raises(ValueError, match="not one of"):
        measure_rule("Streetlight", "temperature", None)


def test_parse_decimal_with_a_decimal_comma() -> None:
    assert parse_decimal("55,3", field="x", decimal=",") == 55.3
    assert parse_decimal(" -3 ", field="x", decimal=",") == -3
    with pytest.raises(InvalidRecordError) as info:
        parse_decimal("1.013,2", field="x", decimal=",")
    assert info.value.reason == "wrong_type"
    with pytest.raises(InvalidRecordError) as info:
        parse_decimal("  ", field="x")
    assert info.value.reason == "missing_field"
