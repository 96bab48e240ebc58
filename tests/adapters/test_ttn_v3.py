"""The Things Stack v3 adapter: uplink shapes, nanosecond times, profiles, Device entity, ugly cases."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from adapters.base import load_config
from adapters.ttn_v3 import TtnV3Adapter, TtnV3Config, parse_rfc3339
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import ParsedEntity, RawMessage
from tests.adapters.validity import assert_valid

PLACE = {"latitude": 41.3818, "longitude": 2.1734, "altitude": 12, "source": "SOURCE_REGISTRY"}


def uplink(decoded: dict[str, Any] | None = None, **uplink_fields: Any) -> dict[str, Any]:
    """A realistic TTS v3 uplink as the MQTT/webhook integrations send it."""
    message: dict[str, Any] = {
        "end_device_ids": {
            "device_id": "aq-rambla-03",
            "application_ids": {"application_id": "city-air"},
            "dev_eui": "70B3D57ED0051A2B",
            "join_eui": "0000000000000000",
            "dev_addr": "260B1F2A",
        },
        "correlation_ids": ["gs:uplink:01JD3K8W6ZQX5R4T2N1M0P9S8V"],
        "received_at": "2025-04-16T11:54:13.995136483Z",
        "uplink_message": {
            "session_key_id": "AXA50dPcA5Z0M4Ry0HHnMA==",
            "f_port": 2,
            "f_cnt": 14,
            "frm_payload": "sQAAEAHlANcB",
            "decoded_payload": {"pm2_5": 9.8, "pm10": 17.3} if decoded is None else decoded,
            "rx_metadata": [
                {
                    "gateway_ids": {"gateway_id": "gw-a"},
                    "time": "2025-04-16T11:54:13.697237014Z",
                    "rssi": -97,
                    "snr": 4.2,
                },
                {
                    "gateway_ids": {"gateway_id": "gw-b"},
                    "time": "2025-04-16T11:54:13.697237014Z",
                    "rssi": -31,
                    "snr": 9.5,
                },
            ],
            "settings": {"data_rate": {"lora": {"bandwidth": 125000, "spreading_factor": 7}}, "frequency": "867700000"},
            "received_at": "2025-04-16T11:54:13.787593298Z",
            "locations": {"user": dict(PLACE)},
        },
    }
    message["uplink_message"].update(uplink_fields)
    return message


def message(doc: Any) -> RawMessage:
    payload = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return RawMessage(
        payload=payload,
        source="test",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        topic="v3/city-air@ttn/devices/aq-rambla-03/up",
    )


def adapter(config: dict[str, Any] | None = None) -> TtnV3Adapter:
    return TtnV3Adapter(TtnV3Config.model_validate(config or {}))


def parse(doc: Any, config: dict[str, Any] | None = None) -> list[ParsedEntity]:
    return adapter(config).parse(message(doc))


def by_type(entities: list[ParsedEntity]) -> dict[str, dict[str, Any]]:
    out = {e.entity_type: e.data for e in entities}
    assert len(out) == len(entities), "one entity per type"
    return out


def rejected(doc: Any, config: dict[str, Any] | None = None) -> InvalidRecordError:
    with pytest.raises(InvalidRecordError) as info:
        parse(doc, config)
    assert info.value.detail
    return info.value


# -- mapping ---------------------------------------------------------------------------------------


def test_air_quality_uplink_and_its_device() -> None:
    entities = parse(uplink({"pm2_5": 9.8, "pm10": 17.3, "no2": 31, "battery": 87}))
    found = by_type(entities)
    assert set(found) == {"AirQualityObserved", "Device"}
    aq, device = found["AirQualityObserved"], found["Device"]
    assert aq == {
        "id": "urn:ngsi-ld:AirQualityObserved:aq-rambla-03",
        "type": "AirQualityObserved",
        "dateObserved": "2025-04-16T11:54:13.787Z",  # the network server's reception, nanoseconds cut
        "location": {"type": "Point", "coordinates": [2.1734, 41.3818]},
        "pm25": 9.8,
        "pm10": 17.3,
        "no2": 31,
        "refDevice": "urn:ngsi-ld:Device:aq-rambla-03",
    }
    assert device["id"] == aq["refDevice"]
    assert device["batteryLevel"] == 0.87
    assert device["rssi"] == -31  # the best of the gateways
    assert device["controlledProperty"] == ["airPollution"]
    assert device["dateLastValueReported"] == "2025-04-16T11:54:13.995Z"
    assert device["supportedProtocol"] == ["lora"]
    for entity in entities:
        assert_valid(entity.data)


def test_weather_values_go_to_weather_observed_with_units() -> None:
    found = by_type(parse(uplink({"temperature": 14.6, "humidity": 71, "pressure": 1012.4})))
    weather = found["WeatherObserved"]
    assert weather["temperature"] == 14.6
    assert weather["relativeHumidity"] == 0.71
    assert weather["atmosphericPressure"] == 1012.4
    assert "AirQualityObserved" not in found
    assert found["Device"]["controlledProperty"] == ["atmosphericPressure", "humidity", "temperature"]
    assert_valid(weather)
    assert_valid(found["Device"])


def test_noise_window_from_the_payload() -> None:
    found = by_type(parse(uplink({"laeq": 61.2, "lamax": 80.1, "period_s": 300})))
    noise = found["NoiseLevelObserved"]
    assert noise["dateObservedTo"] == "2025-04-16T11:54:13.787Z"
    assert noise["dateObservedFrom"] == "2025-04-16T11:49:13.787Z"
    assert noise["LAeq"] == 61.2 and noise["LAmax"] == 80.1
    assert "period_s" not in noise
    assert_valid(noise)


def test_noise_window_from_the_profile_and_missing_window() -> None:
    config = {
        "profiles": {
            "default": {
                "fields": {"laeq": {"entity_type": "NoiseLevelObserved", "property": "LAeq"}},
                "noise_period_s": 60,
            }
        }
    }
    noise = by_type(parse(uplink({"laeq": 50}), config))["NoiseLevelObserved"]
    assert noise["dateObservedFrom"] == "2025-04-16T11:53:13.787Z"
    err = rejected(uplink({"laeq": 50}))
    assert err.reason == "missing_field" and "window" in err.detail
    assert rejected(uplink({"laeq": 50, "period_s": 0})).reason == "out_of_range"
    err = rejected(uplink({"period_s": 60, "battery": 50}))  # a window without levels
    assert err.reason == "missing_field"


def test_null_readings_are_left_out() -> None:
    found = by_type(parse(uplink({"pm2_5": 9.8, "pm10": None})))
    assert "pm10" not in found["AirQualityObserved"]


def test_same_property_from_two_keys_must_agree() -> None:
    found = by_type(parse(uplink({"pm2_5": 9.8, "pm25": 9.8})))
    assert found["AirQualityObserved"]["pm25"] == 9.8
    assert rejected(uplink({"pm2_5": 9.8, "pm25": 10.1})).reason == "conflicting_values"


# -- times -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-04-16T11:54:13.995136483Z", "2025-04-16T11:54:13.995136+00:00"),
        ("2025-04-16T11:54:13.9999999999Z", "2025-04-16T11:54:13.999999+00:00"),  # truncated, never rounded up
        ("2025-04-16T11:54:13.5Z", "2025-04-16T11:54:13.500000+00:00"),
        ("2025-04-16T11:54:13Z", "2025-04-16T11:54:13+00:00"),
        ("2025-04-16T13:54:13.123456789+02:00", "2025-04-16T11:54:13.123456+00:00"),
    ],
)
def test_rfc3339_with_nanoseconds(text: str, expected: str) -> None:
    assert parse_rfc3339(text, field="received_at").isoformat() == expected


def test_bad_times() -> None:
    with pytest.raises(InvalidRecordError) as info:
        parse_rfc3339("2025-04-16T11:54:13.123456789", field="received_at")
    assert info.value.reason == "timestamp_without_zone"
    with pytest.raises(InvalidRecordError) as info:
        parse_rfc3339("yesterday", field="received_at")
    assert info.value.reason == "invalid_timestamp"
    doc = uplink()
    doc["received_at"] = "2025-04-16T25:00:00Z"
    assert rejected(doc).reason == "invalid_timestamp"
    doc = uplink()
    del doc["received_at"]
    assert rejected(doc).reason == "missing_field"


def test_without_network_server_time_the_application_time_is_used() -> None:
    doc = uplink()
    del doc["uplink_message"]["received_at"]
    aq = by_type(parse(doc))["AirQualityObserved"]
    assert aq["dateObserved"] == "2025-04-16T11:54:13.995Z"


# -- device ----------------------------------------------------------------------------------------


def test_rssi_falls_back_to_channel_rssi_and_may_be_absent() -> None:
    rx = [{"gateway_ids": {"gateway_id": "gw"}, "channel_rssi": -70}]
    assert by_type(parse(uplink(rx_metadata=rx)))["Device"]["rssi"] == -70
    assert "rssi" not in by_type(parse(uplink(rx_metadata=[])))["Device"]
    doc = uplink()
    del doc["uplink_message"]["rx_metadata"]
    assert "rssi" not in by_type(parse(doc))["Device"]
    assert rejected(uplink(rx_metadata=[{"rssi": "-70"}])).reason == "wrong_type"
    assert rejected(uplink(rx_metadata=["gw"])).reason == "wrong_type"
    assert rejected(uplink(rx_metadata={"rssi": -70})).reason == "wrong_type"


def test_battery_in_volts_needs_a_range_and_is_scaled() -> None:
    config = {
        "profiles": {
            "default": {
                "fields": {
                    "pm25": {"entity_type": "AirQualityObserved", "property": "pm25"},
                    "vbat": {
                        "entity_type": "Device",
                        "property": "batteryLevel",
                        "unit": "VLT",
                        "voltage_range": [3.0, 3.6],
                    },
                }
            }
        }
    }
    assert by_type(parse(uplink({"pm25": 3, "vbat": 3.3}), config))["Device"]["batteryLevel"] == 0.5
    assert by_type(parse(uplink({"pm25": 3, "vbat": 2.9}), config))["Device"]["batteryLevel"] == 0.0
    assert rejected(uplink({"pm25": 3, "vbat": 12.0}), config).reason == "out_of_range"


def test_default_profile_ignores_battery_voltage_and_names_it() -> None:
    entities = parse(uplink({"pm2_5": 4, "BatV": 3.38}))
    device = next(e for e in entities if e.entity_type == "Device")
    assert "batteryLevel" not in device.data
    assert device.removed_fields == ("uplink_message.decoded_payload.BatV",)


def test_battery_percent_out_of_range_and_network_battery_fallback() -> None:
    assert rejected(uplink({"pm2_5": 4, "battery": 101})).reason == "out_of_range"
    doc = uplink({"pm2_5": 4}, last_battery_percentage={"f_cnt": 14, "value": 90.118576})
    assert by_type(parse(doc))["Device"]["batteryLevel"] == 0.901186
    doc = uplink({"pm2_5": 4, "battery": 50}, last_battery_percentage={"f_cnt": 14, "value": 90.1})
    assert by_type(parse(doc))["Device"]["batteryLevel"] == 0.5  # the device's own report wins


# -- location --------------------------------------------------------------------------------------


def test_configured_location_wins_over_the_registry() -> None:
    config = {"devices": {"aq-rambla-03": {"location": [2.0, 41.0], "entity_name": "rambla-aq"}}}
    found = by_type(parse(uplink(), config))
    assert found["AirQualityObserved"]["location"]["coordinates"] == [2.0, 41.0]
    assert found["AirQualityObserved"]["id"] == "urn:ngsi-ld:AirQualityObserved:rambla-aq"
    assert found["Device"]["id"] == "urn:ngsi-ld:Device:rambla-aq"


def test_no_location_anywhere_is_refused_but_gateway_locations_are_never_used() -> None:
    doc = uplink()
    del doc["uplink_message"]["locations"]
    doc["uplink_message"]["rx_metadata"][0]["location"] = {"latitude": 41.0, "longitude": 2.0}
    err = rejected(doc)
    assert err.reason == "missing_location"


def test_bad_registry_locations() -> None:
    doc = uplink()
    doc["uplink_message"]["locations"]["user"] = {"latitude": "41.3", "longitude": 2.1}
    assert rejected(doc).reason == "wrong_type"
    doc["uplink_message"]["locations"]["user"] = {"latitude": 141.3, "longitude": 2.1}
    assert rejected(doc).reason == "out_of_range"


def test_battery_only_uplink_without_location_still_reports_the_device() -> None:
    doc = uplink({"battery": 77})
    del doc["uplink_message"]["locations"]
    (device,) = parse(doc)
    assert device.data["batteryLevel"] == 0.77 and "location" not in device.data
    assert_valid(device.data)


# -- not data --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event", ["join_accept", "downlink_ack", "downlink_nack", "downlink_sent", "downlink_failed", "downlink_queued"]
)
def test_other_application_messages_are_named(event: str) -> None:
    doc = {"end_device_ids": uplink()["end_device_ids"], "received_at": "2025-04-16T11:54:13Z", event: {"f_port": 1}}
    err = rejected(doc)
    assert err.reason == "not_an_uplink" and event in err.detail


def test_mac_only_uplinks_and_missing_payloads() -> None:
    doc = uplink()
    del doc["uplink_message"]["f_port"]  # TTS omits port 0
    del doc["uplink_message"]["decoded_payload"]
    assert rejected(doc).reason == "not_an_uplink"
    assert rejected(uplink(f_port=0)).reason == "not_an_uplink"
    doc = uplink()
    del doc["uplink_message"]["decoded_payload"]
    err = rejected(doc)
    assert err.reason == "no_decoded_payload" and "payload formatter" in err.detail
    assert rejected(uplink({})).reason == "no_decoded_payload"
    assert rejected(uplink(decoded_payload=[1, 2])).reason == "wrong_type"
    assert rejected(uplink(f_port="2")).reason == "wrong_type"


def test_wrappers_of_the_storage_and_events_apis() -> None:
    assert by_type(parse({"result": uplink()}))["AirQualityObserved"]["pm25"] == 9.8
    event = {"name": "as.up.data.forward", "time": "2025-04-16T11:54:14Z", "data": uplink()}
    assert by_type(parse(event))["AirQualityObserved"]["pm25"] == 9.8
    err = rejected({"name": "as.down.data.receive", "data": {"downlink_ack": {}}})
    assert err.reason == "not_an_uplink"


def test_something_else_entirely() -> None:
    err = rejected({"hello": "world"})
    assert err.reason == "not_an_uplink" and "hello" in err.detail


# -- ugly payloads ---------------------------------------------------------------------------------


def test_unknown_keys_are_refused_by_default_or_noted_when_allowed() -> None:
    err = rejected(uplink({"pm2_5": 3, "co2": 612}))
    assert err.reason == "unknown_attribute" and err.field == "uplink_message.decoded_payload.co2"
    config = {
        "profiles": {
            "default": {
                "fields": {"pm2_5": {"entity_type": "AirQualityObserved", "property": "pm25"}},
                "unknown_fields": "ignore",
            }
        }
    }
    entities = parse(uplink({"pm2_5": 3, "co2": 612}), config)
    device = next(e for e in entities if e.entity_type == "Device")
    assert device.removed_fields == ("uplink_message.decoded_payload.co2",)
    assert all("co2" not in e.data for e in entities)


@pytest.mark.parametrize("value", ["9.8", "9.8 ug/m3", True, [9.8], {"value": 9.8}])
def test_values_that_are_not_numbers(value: Any) -> None:
    err = rejected(uplink({"pm2_5": value}))
    assert err.reason == "wrong_type" and err.field == "uplink_message.decoded_payload.pm2_5"


def test_out_of_range_values() -> None:
    assert rejected(uplink({"humidity": 104})).reason == "out_of_range"
    assert rejected(uplink({"pm2_5": -2})).reason == "out_of_range"
    assert rejected(uplink({"pressure": 101325})).reason == "out_of_range"  # Pa where hPa is expected


def test_malformed_bytes() -> None:
    assert rejected(b'{"end_device_ids": ').reason == "invalid_json"
    assert rejected(b"\xff\xfe{}").reason == "not_utf8"
    assert rejected(b"[1, 2]").reason == "invalid_json"
    assert rejected(b"NaN").reason == "invalid_json"


def test_missing_or_bad_identifiers() -> None:
    doc = uplink()
    del doc["end_device_ids"]
    assert rejected(doc).reason == "missing_field"
    doc = uplink()
    del doc["end_device_ids"]["application_ids"]
    assert rejected(doc).reason == "missing_field"
    doc = uplink()
    doc["end_device_ids"]["device_id"] = "../../etc"
    assert rejected(doc).reason == "invalid_id"
    doc = uplink()
    doc["end_device_ids"]["device_id"] = 42
    assert rejected(doc).reason == "wrong_type"


def test_applications_and_unknown_devices_can_be_restricted() -> None:
    assert rejected(uplink(), {"applications": ["other-app"]}).reason == "unknown_application"
    assert parse(uplink(), {"applications": ["city-air"]})
    assert rejected(uplink(), {"unknown_devices": "reject"}).reason == "unknown_device"
    assert parse(uplink(), {"unknown_devices": "reject", "devices": {"aq-rambla-03": {}}})


def test_the_message_is_not_modified() -> None:
    doc = uplink()
    before = copy.deepcopy(doc)
    parse(doc)
    assert doc == before


# -- configuration ---------------------------------------------------------------------------------


def _config_error(config: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "ttn.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_config(TtnV3Config, path)
    return str(info.value)


def _profile(**field: Any) -> dict[str, Any]:
    return {"profiles": {"p": {"fields": {"k": field}}}}


def test_configuration_errors(tmp_path: Path) -> None:
    assert "voltage_range" in _config_error(
        _profile(entity_type="Device", property="batteryLevel", unit="VLT"), tmp_path
    )
    assert "cannot be converted" in _config_error(
        _profile(entity_type="AirQualityObserved", property="no2", unit="59"), tmp_path
    )
    assert "no measured property" in _config_error(_profile(entity_type="WeatherObserved", property="pm25"), tmp_path)
    assert "batteryLevel" in _config_error(_profile(entity_type="Device", property="rssi"), tmp_path)
    assert "SEC or MIN" in _config_error(
        _profile(entity_type="NoiseLevelObserved", property="observationPeriod", unit="HUR"), tmp_path
    )
    assert "unknown profile" in _config_error({"devices": {"d": {"profile": "nope"}}}, tmp_path)
    both = {
        "profiles": {
            "p": {"fields": {"k": {"entity_type": "WeatherObserved", "property": "temperature"}}, "ignore": ["k"]}
        }
    }
    assert "both mapped and ignored" in _config_error(both, tmp_path)
    assert "location" in _config_error({"devices": {"d": {"location": [41.4, 182.0]}}}, tmp_path)
    assert "entity_name" in _config_error({"devices": {"d": {"entity_name": "has space"}}}, tmp_path)


def test_no_configuration_means_the_default_profile() -> None:
    assert TtnV3Adapter().parse(message(uplink()))
    sample = Path(__file__).resolve().parents[2] / "adapters" / "samples" / "ttn-v3" / "config.json"
    assert isinstance(TtnV3Adapter.from_config_file(sample), TtnV3Adapter)
