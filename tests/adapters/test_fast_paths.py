"""The parse and read fast paths give what the plain paths give, and their memo tables stay bounded.

Each cache or shortcut of the hot path is checked here against the general code it stands in for (kept
in the module, or copied below as it was before the shortcut), on the edge cases and on generated input.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters import care_hub, department_csv, fields, streetlight_json, traffic_counter, ttn_v3, ultralight
from adapters.base import Adapter
from adapters.care_hub import CareHubAdapter
from adapters.department_csv import DepartmentCsvAdapter, DepartmentCsvConfig
from adapters.streetlight_json import StreetlightJsonAdapter, StreetlightJsonConfig
from adapters.traffic_counter import TrafficCounterAdapter, TrafficCounterConfig
from adapters.ttn_v3 import parse_rfc3339
from adapters.ultralight import UltraLightAdapter
from governance.errors import InvalidRecordError
from governance.ingest import timeparse
from governance.ingest.message import ParsedEntity, RawMessage
from governance.ingest.sources import read_capture_lines, unwrap_capture_line
from governance.ingest.timeparse import localize, parse_instant, utc_iso
from tests.adapters.test_ttn_v3 import message as ttn_message
from tests.adapters.test_ttn_v3 import uplink

MADRID = ZoneInfo("Europe/Madrid")
RECEIVED = datetime(2026, 3, 2, 9, 30, 15, 250000, tzinfo=UTC)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _fresh_time_tables() -> Iterator[None]:
    timeparse.clear_caches()
    yield
    timeparse.clear_caches()


# -- the code the shortcuts stand in for, as it was ---------------------------------------------------


def plain_parse_instant(value: Any, *, field: str, zone: ZoneInfo | None) -> datetime:
    if isinstance(value, bool):
        raise InvalidRecordError("wrong_type", f"'{field}' must be a timestamp, got a boolean", field=field)
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 10_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise InvalidRecordError(
                "invalid_timestamp", f"'{field}' epoch value {value!r} is out of range", field=field
            ) from exc
    if not isinstance(value, str):
        raise InvalidRecordError(
            "wrong_type", f"'{field}' must be a timestamp string, got {type(value).__name__}", field=field
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRecordError(
            "invalid_timestamp", f"'{field}' is not an ISO 8601 timestamp: {value[:64]!r}", field=field
        ) from exc
    if parsed.tzinfo is None:
        if zone is None:
            raise InvalidRecordError(
                "timestamp_without_zone",
                f"'{field}' has no UTC offset ({value[:64]!r}) and no time zone is configured for this source",
                field=field,
            )
        return localize(parsed, zone, field=field, raw=value)
    return parsed.astimezone(UTC)


def plain_utc_iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


_FRACTION = re.compile(r"(\.\d+)")


def plain_parse_rfc3339(value: Any, *, field: str) -> datetime:
    if isinstance(value, str):
        head, sep, rest = value.partition("T")
        match = _FRACTION.search(rest) if sep else None
        if match is not None and len(match.group(1)) > 7:
            rest = rest[: match.start()] + match.group(1)[:7] + rest[match.end() :]
            value = head + sep + rest
    return plain_parse_instant(value, field=field, zone=None)


def plain_split(text: str, separator: str, quotechar: str) -> list[str]:
    try:
        return next(csv.reader([text], delimiter=separator, quotechar=quotechar, strict=True), [])
    except csv.Error as exc:
        raise InvalidRecordError("csv_syntax", f"the row is not valid CSV ({exc})") from None


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a call gives, comparable: ('ok', value and its exact type) or ('error', reason, detail, field)."""
    try:
        value = call(*args, **kwargs)
    except InvalidRecordError as exc:
        return ("error", (exc.reason, exc.detail, exc.field))
    except (OverflowError, ValueError) as exc:  # (year 1 minus an offset: as before, not a record error)
        return ("raised", (type(exc), str(exc)))
    if isinstance(value, datetime):
        return ("ok", (value, value.utcoffset(), type(value.tzinfo)))
    return ("ok", (value, type(value)))


# -- timestamps -----------------------------------------------------------------------------------------

_digits = st.text(alphabet="0123456789", min_size=1, max_size=2)
_stamp = st.builds(
    lambda y, mo, d, h, mi, s, frac, end: f"{y}-{mo}-{d}T{h}:{mi}:{s}{frac}{end}",
    st.sampled_from(["2026", "0999", "1000", "9999", "0001", "2024", "2o26"]),
    st.sampled_from(["01", "02", "12", "13", "00", "1"]),
    st.sampled_from(["01", "28", "29", "30", "31", "32"]),
    st.sampled_from(["00", "02", "23", "24"]),
    st.sampled_from(["00", "30", "59", "60"]),
    st.sampled_from(["00", "15", "59", "60"]),
    st.sampled_from(["", ".", ".0", ".25", ".250", ".000", ".0005", ".649000019", ".6499999999", ".123456789"]),
    st.sampled_from(["Z", "z", "+00:00", "+01:00", "-05:30", "", " Z", "Z ", "ZZ", "+0100"]),
)


@FAST
@given(_stamp, st.sampled_from([None, MADRID]))
def test_parse_instant_is_the_plain_parse(value: str, zone: ZoneInfo | None) -> None:
    for _ in range(2):  # once computed, once from the table
        assert outcome(parse_instant, value, field="ts", zone=zone) == outcome(
            plain_parse_instant, value, field="ts", zone=zone
        )
    try:
        moment = plain_parse_instant(value, field="ts", zone=zone)
    except (InvalidRecordError, OverflowError, ValueError):
        return
    assert utc_iso(moment) == plain_utc_iso(moment)
    assert utc_iso(moment) == plain_utc_iso(moment)  # from the table


@pytest.mark.parametrize(
    "value",
    [
        "2026-01-04T23:30:43.839Z",
        "2026-01-04T23:30:43Z",
        "2026-01-04T23:30:43.000Z",
        "2026-01-04T23:30:43.000500Z",
        "2026-01-04T23:30:47.649000019Z",
        "2026-01-04T23:30:47.000000019Z",
        "2026-01-04T23:30:43.8Z",
        "0999-01-04T23:30:43Z",
        "0999-01-04T23:30:43.123Z",
        "2026-02-30T10:00:00Z",
        "٢٠٢٦-01-04T23:30:43Z",
    ],
)
def test_utc_texts_parse_and_format_as_before(value: str) -> None:
    assert outcome(parse_instant, value, field="ts", zone=None) == outcome(
        plain_parse_instant, value, field="ts", zone=None
    )
    if outcome(plain_parse_instant, value, field="ts", zone=None)[0] == "ok":
        moment = parse_instant(value, field="ts", zone=None)
        assert utc_iso(moment) == plain_utc_iso(moment)


@FAST
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(0)), MADRID]),
)
def test_utc_iso_is_strftime(naive: datetime, tz: Any) -> None:
    moment = naive.replace(tzinfo=tz)
    assert utc_iso(moment) == plain_utc_iso(moment)
    assert utc_iso(moment) == plain_utc_iso(moment)  # from the table


def test_utc_iso_tells_the_two_times_of_a_night_when_clocks_go_back_apart() -> None:
    first = datetime(2026, 10, 25, 2, 30, tzinfo=MADRID)  # 00:30 UTC
    second = first.replace(fold=1)  # the same wall clock an hour later: 01:30 UTC
    assert first == second  # (one zone: compared by wall clock)
    assert (utc_iso(first), utc_iso(second)) == ("2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z")
    assert (utc_iso(second), utc_iso(first)) == ("2026-10-25T01:30:00Z", "2026-10-25T00:30:00Z")


def test_utc_iso_keeps_no_naive_time_and_writes_early_years_as_strftime() -> None:
    naive = datetime(2026, 1, 4, 12, 0, 0)
    assert utc_iso(naive) == plain_utc_iso(naive)
    assert timeparse._LAST[0] is not naive and timeparse._BEFORE_LAST[0] is not naive
    early = datetime(999, 5, 1, 10, 0, 0, 1000, tzinfo=UTC)
    assert utc_iso(early) == plain_utc_iso(early)


def test_local_times_are_kept_per_zone() -> None:
    text = "2026-07-20T07:00:00"
    madrid = parse_instant(text, field="from", zone=MADRID)
    london = parse_instant(text, field="from", zone=ZoneInfo("Europe/London"))
    assert (utc_iso(madrid), utc_iso(london)) == ("2026-07-20T05:00:00Z", "2026-07-20T06:00:00Z")
    with pytest.raises(InvalidRecordError) as err:  # the zone-less question is not answered from the table
        parse_instant(text, field="from", zone=None)
    assert err.value.reason == "timestamp_without_zone"


def test_refused_times_are_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(InvalidRecordError) as err:
            parse_instant("2026-10-25T02:30:00", field="from", zone=MADRID)
        assert err.value.reason == "ambiguous_local_time"
    assert not timeparse._LOCAL_TIMES


def test_time_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeparse, "CACHE_SIZE", 50)
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)  # winter: Madrid is UTC+1
    for n in range(500):
        moment = start + timedelta(seconds=n, milliseconds=1)
        local = (moment + timedelta(hours=1)).replace(tzinfo=None).isoformat()
        for _ in range(2):
            assert parse_instant(local, field="t", zone=MADRID) == moment
            assert utc_iso(moment) == plain_utc_iso(moment)
        assert len(timeparse._LOCAL_TIMES) <= 50
    assert timeparse._LOCAL_TIMES  # (it was used)


def test_the_last_two_instants_written_are_reused_and_only_they() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    moments = [start + timedelta(seconds=n, microseconds=n * 1001) for n in range(6)]
    for sequence in ([0, 1, 0, 1, 1, 0], [0, 1, 2, 0, 2, 1], [3, 4, 5, 3, 4, 5, 5, 4, 3]):
        for index in sequence:
            assert utc_iso(moments[index]) == plain_utc_iso(moments[index])
        assert {timeparse._LAST[0], timeparse._BEFORE_LAST[0]} <= set(moments)
    assert utc_iso(datetime.min.replace(tzinfo=UTC)) == plain_utc_iso(datetime.min.replace(tzinfo=UTC))


@FAST
@given(
    st.sampled_from(["2026-01-04T23:30:47.", "2026-01-04T23:30:47,", "2026-01-04 23:30:47."]),
    st.text(alphabet="0123456789", min_size=0, max_size=12),
    st.sampled_from(["Z", "+00:00", "+01:00", "", "z"]),
)
def test_rfc3339_nanoseconds_parse_as_before(head: str, fraction: str, end: str) -> None:
    value = head + fraction + end
    assert outcome(parse_rfc3339, value, field="received_at") == outcome(
        plain_parse_rfc3339, value, field="received_at"
    )


# -- reading capture files ----------------------------------------------------------------------------

CAPTURE_LINES = [
    b'{"topic": "/ul/k/d/attrs", "payload": "t|1", "received_at": "2026-01-04T23:30:43.839Z"}',
    b'{"topic": "a", "payload": {"x": 1, "y": [1.5, null]}, "received_at": "2026-01-04T23:30:43Z"}',
    b'{"topic": "a", "payload": "caf\\u00e9 \\ud83d\\ude00"}',
    b'{"topic": "a", "payload": "lone \\ud800 surrogate"}',
    b'{"payload": 12}',
    b'{"topic": null, "payload": null, "received_at": null}',
    b'{"topic": 5, "payload": "x"}',
    b'{"topic": "a", "payload": "x", "received_at": 1763971200000}',
    b'{"topic": "a", "payload": "x", "received_at": "2026-01-04T23:30:43"}',
    b'{"topic": "a", "payload": "x", "received_at": "yesterday"}',
    b'{"topic": "a", "payload": "x", "received_at": true}',
    b'{"topic": "a", "payload_b64": "aGVsbG8="}',
    b'{"topic": "a", "payload_b64": "not base64!"}',
    b'{"topic": "a", "payload_b64": "aGVsbG8=", "payload": "ignored"}',
    b'{"topic": "a"}',
    b"[1, 2]",
    b"not json",
    b'{"topic": "a", "payload": "\xff"}',
]


def test_capture_lines_read_as_the_general_unwrap(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b"\n".join(CAPTURE_LINES) + b"\n")
    got = list(read_capture_lines(path, received_at=RECEIVED, max_bytes=4096))
    assert len(got) == len(CAPTURE_LINES)
    for number, (line, message) in enumerate(zip(CAPTURE_LINES, got, strict=True), start=1):
        expected = unwrap_capture_line(line, where=f"{path}:{number}", number=number, received_at=RECEIVED)
        assert _as_tuple(message) == _as_tuple(expected), line


def _as_tuple(message: RawMessage) -> tuple[Any, ...]:
    defect = message.defect
    return (
        message.payload,
        message.source,
        message.received_at,
        message.received_at.utcoffset(),
        message.topic,
        dict(message.context),
        None if defect is None else (defect.reason, defect.detail),
    )


# -- identifiers ----------------------------------------------------------------------------------------


def test_checked_ids_remember_things_not_people_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fields, "_CHECKED_IDS", set())
    monkeypatch.setattr(fields, "CHECKED_IDS_KEPT", 10)
    assert fields.local_id({"hub": "H-1"}, "hub") == "H-1"
    assert "H-1" in fields._CHECKED_IDS
    assert fields.local_id({"resident": "R-77"}, "resident", echo=False) == "R-77"
    assert "R-77" not in fields._CHECKED_IDS
    for bad in ("", "  ", "a b", "x" * 101, 5, None):
        for _ in range(2):
            with pytest.raises(InvalidRecordError):
                fields.local_id({"hub": bad}, "hub")
    for n in range(100):
        fields.local_id({"hub": f"H-{n}"}, "hub")
        assert len(fields._CHECKED_IDS) <= 10


# -- UltraLight -----------------------------------------------------------------------------------------

AQ = "aqkey01"


def ul_provisioning(devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    location = {"name": "location", "type": "geo:json", "value": {"type": "Point", "coordinates": [-3.7, 40.4]}}
    return {
        "services": [
            {
                "apikey": AQ,
                "entity_type": "AirQualityObserved",
                "attributes": [
                    {"object_id": "t", "name": "temperature", "type": "Number",
                     "metadata": {"unitCode": {"type": "Text", "value": "CEL"}}},
                    {"object_id": "h", "name": "relativeHumidity", "type": "Number",
                     "metadata": {"unitCode": {"type": "Text", "value": "P1"}}},
                ],
                "static_attributes": [location],
            }
        ],
        "devices": devices
        if devices is not None
        else [
            {"device_id": "cel"},
            {"device_id": "fah", "attributes": [
                {"object_id": "t", "name": "temperature", "type": "Number",
                 "metadata": {"unitCode": {"type": "Text", "value": "FAH"}}}]},
        ],
    }


def ul(payload: str, device: str = "cel", topic: str | None = None) -> RawMessage:
    return RawMessage(
        payload=payload.encode(), source="t", received_at=RECEIVED, topic=topic or f"/ul/{AQ}/{device}/attrs"
    )


def result(adapter: Adapter, message: RawMessage) -> Any:
    try:
        return [(e.data, e.removed_fields) for e in adapter.parse(message)]
    except InvalidRecordError as exc:
        return (exc.reason, exc.detail, exc.field)


def test_ultralight_same_text_in_other_units_is_converted_apart() -> None:
    adapter = _ul_adapter()
    (cel,) = adapter.parse(ul("t|50|h|50", "cel"))
    (fah,) = adapter.parse(ul("t|50|h|50", "fah"))
    assert (cel.data["temperature"], fah.data["temperature"]) == (50, 10.0)
    assert cel.data["relativeHumidity"] == fah.data["relativeHumidity"] == 0.5
    (again,) = adapter.parse(ul("t|50", "fah"))
    assert again.data["temperature"] == 10.0 and isinstance(again.data["temperature"], float)


def test_ultralight_refusals_are_not_remembered_as_values_or_routes() -> None:
    adapter = _ul_adapter()
    for _ in range(2):
        assert result(adapter, ul("t|500"))[0] == "out_of_range"  # 500 °C
        assert result(adapter, ul("t|x1"))[0] == "wrong_type"
        assert result(adapter, ul("t|1", "nobody"))[0] == "unknown_device"
        assert result(adapter, ul("t|1", topic="/ul/other/cel/attrs"))[0] == "unknown_apikey"
        assert result(adapter, ul("t|1", topic=f"/ul/{AQ}/cel/cmd"))[0] == "not_a_measure"
    assert all(topic.endswith("/attrs") for topic in adapter._routes)
    assert f"/ul/{AQ}/nobody/attrs" not in adapter._routes


def test_ultralight_fast_paths_give_what_a_fresh_adapter_gives() -> None:
    warm = _ul_adapter()
    messages = [
        ul("t|21.4|h|56"), ul("t|21.4|h|56", "fah"), ul("t|21.4|h|56", topic=f"{AQ}/cel/attrs"),
        ul("2026-03-02T09:00:00Z|t|1#2026-03-02T09:05:00Z|t|2"),
        ul("2026-03-02T09:00:00Z|t|1#2026-03-02T09:00:00Z|h|3"),
        ul("2026-03-02T09:00:00Z|t|1#2026-03-02T09:00:00Z|t|2"), ul("t|1|t|1"), ul("t||h|1"), ul("t|1|h"),
        ul("21.5", topic=f"/ul/{AQ}/cel/attrs/t"), ul("t|1|zz|2"), ul(""), ul("#"),
        ul("2026-03-02T09:00:00Z|t|1|h|2"), ul("2026-03-02T09:00:00|t|1"), ul("2026-13-02T09:00:00Z|t|1"),
        ul("2026-03-02T09:00:00Z|t|1|t|1"), ul("9|t|1"), ul("x|t|1"), ul("|t|1|h|2"), ul("t|1|h|2|"),
        ul("2026-03-02T09:00:00Z"), ul("t|1 \r\n"), ul("t| 1|h|2"), ul("zz|1|t|1"), ul("t|1|zz|1"),
    ]
    for message in messages * 2:
        assert result(warm, message) == result(_ul_adapter(), message), message.payload


def test_ultralight_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ultralight, "ROUTES_KEPT", 3)
    monkeypatch.setattr(ultralight, "VALUES_KEPT", 5)
    adapter = _ul_adapter()
    for n in range(40):
        (entity,) = adapter.parse(ul(f"t|{n}.5", topic="/" * (n % 7) + f"ul/{AQ}/cel/attrs"))
        assert entity.data["temperature"] == n + 0.5
        assert len(adapter._routes) <= 3
        assert all(len(measure[2]) <= 5 for measure in adapter._devices[(AQ, "cel")].measures.values())


def test_ultralight_provisioning_file_changed_is_read_again(tmp_path: Path) -> None:
    """A retry builds the adapter from the file again: what one adapter remembered does not survive."""
    path = tmp_path / "provisioning.json"
    path.write_text(json.dumps(ul_provisioning([{"device_id": "cel"}])))
    first = UltraLightAdapter.from_config_file(path)
    assert result(first, ul("t|20", "late"))[0] == "unknown_device"
    assert first.parse(ul("t|20"))[0].data["temperature"] == 20
    path.write_text(json.dumps(ul_provisioning([{"device_id": "cel", "attributes": [
        {"object_id": "t", "name": "temperature", "type": "Number",
         "metadata": {"unitCode": {"type": "Text", "value": "FAH"}}}]}, {"device_id": "late"}])))
    second = UltraLightAdapter.from_config_file(path)
    assert second.parse(ul("t|20", "late"))[0].data["temperature"] == 20
    assert second.parse(ul("t|50"))[0].data["temperature"] == 10.0  # the device now reports Fahrenheit


def _ul_adapter() -> UltraLightAdapter:
    return UltraLightAdapter(ultralight.UltraLightConfig.model_validate(ul_provisioning()))


# UltraLight usual messages against the general path: three kinds of device (a time from the receipt, a
# leading timestamp over a period, a TimeInstant measure in a zone), usual and unusual payloads.

NOISE, WEATHER = "nzkey01", "wxkey01"
_UL_NOISE_KEYS = ("laeq", "lamax", "las")
_UL_WEATHER_KEYS = ("ts", "tf", "h", "ws")


def ul_kinds_provisioning() -> dict[str, Any]:
    def number(object_id: str, name: str, unit: str) -> dict[str, Any]:
        return {"object_id": object_id, "name": name, "type": "Number",
                "metadata": {"unitCode": {"type": "Text", "value": unit}}}

    config = ul_provisioning()
    location = config["services"][0]["static_attributes"][0]
    config["services"][0]["static_attributes"] = [
        {"name": "typeofLocation", "type": "Text", "value": "outdoor"}, location,
        {"name": "dataProvider", "type": "Text", "value": "city"},
    ]
    config["services"] += [
        {"apikey": NOISE, "entity_type": "NoiseLevelObserved", "static_attributes": [location],
         "observation_window": {"seconds": 900, "time_marks": "end"},
         "attributes": [number("laeq", "LAeq", "2N"), number("lamax", "LAmax", "2N"), number("las", "LAS", "2N")]},
        {"apikey": WEATHER, "entity_type": "WeatherObserved", "timezone": "Europe/Madrid",
         "static_attributes": [location],
         "attributes": [{"object_id": "ts", "name": "TimeInstant", "type": "DateTime"},
                        number("tf", "temperature", "FAH"), number("h", "relativeHumidity", "P1"),
                        number("ws", "windSpeed", "KMH")]},
    ]
    for device in config["devices"]:
        device["apikey"] = AQ
    config["devices"] += [
        {"device_id": "nz", "apikey": NOISE},
        {"device_id": "nzs", "apikey": NOISE, "observation_window": {"seconds": 300, "time_marks": "start"}},
        {"device_id": "wx", "apikey": WEATHER},
        {"device_id": "hash", "apikey": AQ, "attributes": [number("pm#25", "pm25", "GQ")]},  # ('#' splits groups)
    ]
    return config


def _ul_kinds_adapter() -> UltraLightAdapter:
    return UltraLightAdapter(ultralight.UltraLightConfig.model_validate(ul_kinds_provisioning()))


_UL_DEVICES = {
    f"/ul/{AQ}/cel/attrs": ("t", "h"), f"/ul/{AQ}/fah/attrs": ("t", "h"), f"/{AQ}/cel/attrs": ("t", "h"),
    f"/ul/{NOISE}/nz/attrs": _UL_NOISE_KEYS, f"/ul/{NOISE}/nzs/attrs": _UL_NOISE_KEYS,
    f"/ul/{WEATHER}/wx/attrs": _UL_WEATHER_KEYS, f"/ul/{AQ}/hash/attrs": ("t", "h"),
}
_UL_ODD_TOPICS = [f"/ul/{AQ}/nobody/attrs", "/ul/nokey/cel/attrs", f"/ul/{AQ}/cel/attrs/t", f"/ul/{AQ}/cel/cmd", "x"]
_UL_STAMPS = ["2026-03-02T09:00:00Z", "2026-03-02T09:00:00.250Z", "2026-03-02T09:00:00", "2026-03-02T10:00:00+01:00",
              "2026-13-02T09:00:00Z", "2026-03-29T02:30:00", "2026-10-25T02:30:00", " 2026-03-02T09:00:00",
              "2026-03-02T09:00:00.123456789Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-03-02", "9", "x"]
_ul_numbers = st.one_of(
    st.sampled_from(["21.4", "56", "0", "-0", "0.0", "10", "50", "99.5", "40.1", "1e1", "1E-2", "+5", ".5", "5."]),
    st.integers(-60, 130).map(str),
    st.decimals(-50, 120, places=2, allow_nan=False).map(str),
)
_ul_values = st.one_of(
    _ul_numbers,
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "500", "-300", "x", "0x10", "1,5", " 1",
                     "1 ", "\uff11", "1_0", "9" * 400, "2026-03-02T09:00:00Z"]),
    st.text(alphabet="0123456789.-+eE xé", max_size=6),
)


@st.composite
def _ul_usual(draw: st.DrawFn) -> RawMessage:
    """A message as devices send them: provisioned keys, each once, with readings in range."""
    topic = draw(st.sampled_from(sorted(_UL_DEVICES)))
    known = _UL_DEVICES[topic]
    keys = draw(st.lists(st.sampled_from([k for k in known if k != "ts"]), min_size=1, unique=True))
    pairs = [(key, draw(st.integers(0, 60).map(str) | st.sampled_from(["21.4", "40.5", "0.5", "55.25"])))
             for key in keys]
    if "ts" in known:
        pairs.insert(draw(st.integers(0, len(pairs))), ("ts", draw(st.sampled_from(_UL_STAMPS[:4]))))
    text = "|".join(f"{k}|{v}" for k, v in pairs)
    if "ts" not in known and draw(st.booleans()):
        text = draw(st.sampled_from(_UL_STAMPS[:2])) + "|" + text
    text += draw(st.sampled_from(["", "", "\r\n", " "]))
    received = draw(st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)))
    return RawMessage(payload=text.encode(), source="t", received_at=received, topic=topic)


@st.composite
def _ul_unusual(draw: st.DrawFn) -> RawMessage:
    """Anything near a usual message: odd keys, values, times, separators, topics, encodings."""
    topic = draw(st.sampled_from([*sorted(_UL_DEVICES), *_UL_ODD_TOPICS]))
    keys = st.sampled_from([*_UL_DEVICES.get(topic, ("t",)), "t", "zz", "", "TimeInstant", "ts", "T", "pm#25"])
    tokens = draw(st.lists(st.one_of(keys, _ul_values, st.sampled_from(_UL_STAMPS)), max_size=12))
    separators = st.sampled_from(["|", "|", "|", "|", "#", "||", "|#|", " | "])
    text = tokens[0] if tokens else ""
    for token in tokens[1:]:
        text += draw(separators) + token
    text = draw(st.sampled_from(["", "", "|", "#", "2026-03-02T09:00:00Z|", "x|"])) + text
    text += draw(st.sampled_from(["", "", "|", "#", "\r\n", " ", "|x"]))
    payload = text.encode()
    if draw(st.integers(0, 9)) == 0:
        payload = payload[: draw(st.integers(0, len(payload)))] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9"]))
    received = draw(st.sampled_from([
        RECEIVED, datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2026, 3, 2, 10, tzinfo=timezone(timedelta(hours=1))),
    ]))
    return RawMessage(payload=payload, source="t", received_at=received, topic=topic)


def ul_outcome(call: Any, *args: Any) -> Any:
    """Entities as the bytes they are stored as (key order, int or float), or the refusal."""
    try:
        return [(orjson.dumps(e.data), e.removed_fields) for e in call(*args)]
    except InvalidRecordError as exc:
        return (exc.reason, exc.detail, exc.field)
    except (ValueError, ArithmeticError) as exc:  # (as the general path raises it, if it does)
        return (type(exc).__name__, str(exc))


def ul_general(adapter: UltraLightAdapter, message: RawMessage) -> list[ParsedEntity]:
    """The general path alone: topic, decoding, then :meth:`_general` (what parse did before its shortcut)."""
    plan, device, single = adapter._resolve(message.topic)
    text = fields.decode_text(message.payload).rstrip("\r\n ")
    return adapter._general(plan, device, single, text, message.received_at)


def assert_ul_paths_agree(adapter: UltraLightAdapter, message: RawMessage) -> Any:
    expected = ul_outcome(ul_general, _ul_kinds_adapter(), message)
    for _ in range(2):  # a fresh table, then what the first call remembered
        assert ul_outcome(adapter.parse, message) == expected, message.payload
    assert ul_outcome(ul_general, adapter, message) == expected, message.payload
    return expected


_UL_WARM = _ul_kinds_adapter()


@FAST
@given(_ul_usual())
def test_ultralight_usual_messages_take_the_fast_path(message: RawMessage) -> None:
    expected = assert_ul_paths_agree(_UL_WARM, message)
    assert isinstance(expected, list) and len(expected) == 1
    for adapter in (_UL_WARM, _ul_kinds_adapter()):
        _, device, _ = adapter._resolve(message.topic)
        text = message.payload.decode().rstrip("\r\n ")
        (entity,) = ultralight._usual(device, text, message.received_at) or [None]  # (not the general path)
        assert entity is not None and orjson.dumps(entity.data) == expected[0][0]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ul_unusual())
def test_ultralight_unusual_messages_are_mapped_or_refused_as_the_general_path(message: RawMessage) -> None:
    assert_ul_paths_agree(_UL_WARM, message)
    assert_ul_paths_agree(_ul_kinds_adapter(), message)


@pytest.mark.parametrize(
    ("topic", "text"),
    [
        (f"/ul/{AQ}/cel/attrs", "t|21.4|h|56"), (f"/ul/{AQ}/cel/attrs", "t|21.4|h|56|t|21.4"),
        (f"/ul/{AQ}/cel/attrs", "t|21.4|h|56|t|22"), (f"/ul/{AQ}/cel/attrs", "t|nan"), (f"/ul/{AQ}/cel/attrs", "t|inf"),
        (f"/ul/{AQ}/cel/attrs", "t|"), (f"/ul/{AQ}/cel/attrs", "t"), (f"/ul/{AQ}/cel/attrs", "t|1|h"),
        (f"/ul/{AQ}/cel/attrs", "zz|1"), (f"/ul/{AQ}/cel/attrs", "t|1#h|2"), (f"/ul/{AQ}/cel/attrs", "t|1|h|2#"),
        (f"/ul/{AQ}/cel/attrs", "t|1" * 3000), (f"/ul/{AQ}/cel/attrs", "|".join(f"t{n}|1" for n in range(5000))),
        (f"/ul/{AQ}/cel/attrs", "2026-03-02T09:00:00Z|t|1|h|2"), (f"/ul/{AQ}/cel/attrs", "x2026|t|1"),
        (f"/ul/{NOISE}/nz/attrs", "2026-03-02T09:00:00Z|laeq|55.5|lamax|70|las|50"),
        (f"/ul/{NOISE}/nzs/attrs", "2026-03-02T09:00:00Z|laeq|55.5|lamax|70|las|50"),
        (f"/ul/{NOISE}/nz/attrs", "laeq|55.5|lamax|70"), (f"/ul/{NOISE}/nz/attrs", "2026-03-02T09:00:00|laeq|55.5"),
        (f"/ul/{NOISE}/nz/attrs", "0001-01-01T00:05:00Z|laeq|55.5"),
        (f"/ul/{NOISE}/nzs/attrs", "9999-12-31T23:59:00Z|laeq|55.5"),
        (f"/ul/{WEATHER}/wx/attrs", "ts|2026-03-02T09:00:00|tf|50|h|40"),
        (f"/ul/{WEATHER}/wx/attrs", "tf|50|ts|2026-03-02T09:00:00"),
        (f"/ul/{WEATHER}/wx/attrs", "ts|2026-03-02T09:00:00"),
        (f"/ul/{WEATHER}/wx/attrs", "2026-03-02T08:00:00Z|ts|2026-03-02T09:00:00|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", "2026-03-02T09:00:00|ts|2026-03-02T09:00:00|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", "2026-03-02T09:00:00Z|ts|2026-03-02T09:00:00|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", "2026-03-02T09:00:00Z|tf|50|ts|2026-03-02T09:00:00"),
        (f"/ul/{AQ}/hash/attrs", "pm#25|3"), (f"/ul/{AQ}/hash/attrs", "t|1|pm#25|3"), (f"/ul/{AQ}/hash/attrs", "t|1"),
        (f"/ul/{WEATHER}/wx/attrs", "ts|2026-03-29T02:30:00|tf|50"), (f"/ul/{WEATHER}/wx/attrs", "ts|x|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", "ts| 2026-03-02T09:00:00|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", " 2026-03-02T09:00:00|tf|50"),
        (f"/ul/{WEATHER}/wx/attrs", "ts|2026-03-02T09:00:00|ts|2026-03-02T09:00:00|tf|50"),
    ],
)
def test_ultralight_edge_messages_agree(topic: str, text: str) -> None:
    adapter = _ul_kinds_adapter()
    for warm_up in ("", "ts| 2026-03-02T09:00:00|tf|50", "ts|2026-03-02T09:00:00|tf|50"):
        if warm_up:  # (a time read from a measure must not make a leading one acceptable)
            adapter.parse(RawMessage(payload=warm_up.encode(), source="t", received_at=RECEIVED,
                                     topic=f"/ul/{WEATHER}/wx/attrs"))
        assert_ul_paths_agree(adapter, RawMessage(payload=text.encode(), source="t", received_at=RECEIVED, topic=topic))


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3)), MADRID])))
@FAST
def test_ultralight_receipt_times_are_written_as_utc_iso(moment: datetime) -> None:
    assert ultralight.received_iso(moment) == utc_iso(moment) == plain_utc_iso(moment)
    assert ultralight.received_iso(moment) == utc_iso(moment)  # (the minute remembered)


def test_ultralight_shapes_times_and_minutes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ultralight, "SHAPES_KEPT", 2)
    monkeypatch.setattr(ultralight, "STAMPS_KEPT", 3)
    monkeypatch.setattr(ultralight, "MINUTES_KEPT", 4)
    monkeypatch.setattr(ultralight, "_MINUTES", {})
    adapter = _ul_kinds_adapter()
    shapes = ["t|1", "h|1", "t|1|h|2", "h|1|t|2", "zz|1", "t|1|t|1"]
    for n in range(30):
        message = RawMessage(payload=shapes[n % len(shapes)].encode(), source="t",
                             received_at=RECEIVED + timedelta(minutes=n), topic=f"/ul/{AQ}/cel/attrs")
        assert ul_outcome(adapter.parse, message) == ul_outcome(ul_general, _ul_kinds_adapter(), message)
        stamp = f"2026-03-02T09:{n:02d}:00"
        (wx,) = adapter.parse(RawMessage(payload=f"ts|{stamp}|tf|50".encode(), source="t", received_at=RECEIVED,
                                         topic=f"/ul/{WEATHER}/wx/attrs"))
        assert wx.data["dateObserved"] == utc_iso(localize(datetime.fromisoformat(stamp), MADRID, field="", raw=""))
        for device in adapter._devices.values():
            assert len(device.shapes) <= 2 and len(device.clock.texts) <= 3
            assert all(set(shape) <= set(device.measures) for shape in device.shapes)  # (only provisioned keys)
        assert len(ultralight._MINUTES) <= 4


# -- traffic counters -----------------------------------------------------------------------------------


def counts(sensor: str = "TC-1", **changes: Any) -> RawMessage:
    body: dict[str, Any] = {
        "sensor": sensor, "from": "2026-07-20T07:00:00", "to": "2026-07-20T07:15:00",
        "pedestrians": {"in": 3, "out": 4}, "vehicles": {"car": 5, "truck": 1}, "avg_speed_kmh": 31.5,
    }
    body.update(changes)
    return RawMessage(payload=json.dumps(body).encode(), source="t", received_at=RECEIVED, topic="c")


def test_traffic_sites_resolve_once_and_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic_counter, "SITES_KEPT", 4)
    config = TrafficCounterConfig.model_validate(
        {"default_zone": "Europe/London",
         "sources": {"TC-1": {"zone": "Europe/Madrid", "location": [-3.7, 40.4], "road_segment": "RS-1"}}}
    )
    adapter = TrafficCounterAdapter(config)
    for n in range(20):
        entities = adapter.parse(counts(f"TC-{n % 9}"))
        assert len(adapter._sites) <= 4
        first = entities[0].data
        if n % 9 == 1:
            assert first["dateObservedFrom"] == "2026-07-20T05:00:00Z"
            assert first["refRoadSegment"] == "urn:ngsi-ld:RoadSegment:RS-1"
        else:
            assert first["dateObservedFrom"] == "2026-07-20T06:00:00Z"  # default zone, no place
            assert "location" not in first


@pytest.mark.parametrize(
    "changes",
    [
        {"pedestrians": {"in": -1, "out": 0}},
        {"pedestrians": {"in": True, "out": 0}},
        {"pedestrians": {"in": 1.0, "out": 0}},
        {"pedestrians": {"in": None, "out": 0}},
        {"vehicles": {"car": -2}},
        {"vehicles": {"car": False}},
        {"vehicles": {"car": 2.5}},
        {"vehicles": {"car": None}},
        {"vehicles": {"truck": 1, "lorry": 2}},
        {"vehicles": {}, "avg_speed_kmh": 10},
        {"vehicles": None, "avg_speed_kmh": 10},
        {"vehicles": {"car": 10**30}},
    ],
)
def test_traffic_counts_outside_the_usual_take_the_full_checks(changes: dict[str, Any]) -> None:
    adapter = TrafficCounterAdapter(TrafficCounterConfig(default_zone="Europe/Madrid"))
    message = counts(**changes)
    decoded = orjson.loads(message.payload)
    walkers, vehicles = decoded["pedestrians"], decoded["vehicles"]
    # the plain checks, as the adapter made them before the shortcut
    expected: Any = None
    try:
        for key in ("in", "out"):
            if isinstance(walkers, dict):
                traffic_counter.count(walkers, key, path="pedestrians.")
        if isinstance(vehicles, dict):
            for key in vehicles:
                if key in traffic_counter.VEHICLE_TYPES:
                    traffic_counter.count(vehicles, key, path="vehicles.")
    except InvalidRecordError as exc:
        expected = (exc.reason, exc.detail, exc.field)
    got = result(adapter, message)
    if expected is not None:
        assert got == expected
    elif isinstance(got, tuple):
        assert got[0] in {"duplicate_field", "missing_field"}
    else:
        assert got[0][0]["type"] in {"CrowdFlowObserved", "TrafficFlowObserved"}


# -- streetlight cabinets -------------------------------------------------------------------------------

SITES = StreetlightJsonConfig.model_validate(
    {
        "cabinets": {"CAB-1": {"location": [-3.70325, 40.4165]},
                     "CAB-2": {"location": [-3.6918, 40.4231], "groups": ["G-N", "G-S"]}},
        "lamps": {"L-1": {"location": [-3.70341, 40.41668]}, "L-2": {"location": [-3.69201, 40.42355], "group": "G-N"}},
        "fault_status": {"Custom": "columnIssue"},
    }
)
_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2500), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 100, 100.0, 2000, 2000.5, -0.0, 1e300, "1", [], {}]),
)
_lamp = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["L-1", "L-2", "L-3", "", " L-1", "L 1", 7, None, "x" * 101]),
        "state": st.sampled_from(["ON", "on", " LOW ", "Off", "booting", "", "  ", "dimmed", 1, None]),
        "dim": _values,
        "power_w": _values,
        "energy_wh": _values,
        "fault": st.sampled_from([None, "driver", "Custom", "custom", "communication", "meteor", "", 3]),
    },
    optional={"extra": st.just(1), "mac": st.just("aa:bb")},
).map(lambda lamp: {k: v for k, v in lamp.items() if not (k == "fault" and v == "meteor")})


@FAST
@given(_lamp, st.sampled_from(["CAB-1", "CAB-2"]))
def test_streetlight_usual_lamp_is_mapped_as_the_full_path(raw: dict[str, Any], cabinet: str) -> None:
    adapter = StreetlightJsonAdapter(SITES)
    site = SITES.cabinets[cabinet]
    groups = [f"urn:ngsi-ld:StreetlightGroup:{g}" for g in (site.groups or (cabinet,))]
    group = groups[0] if len(groups) == 1 else None
    cabinet_urn = f"urn:ngsi-ld:StreetlightControlCabinet:{cabinet}"
    observed = "2026-01-04T23:30:43.839Z"
    for _ in range(2):  # once resolving the lamp, once from the table
        fast = adapter._lamp_fast(raw, observed, cabinet_urn, site.location, group)
        try:
            full: Any = adapter._lamp(
                raw, "lamps[0].", observed=observed, cabinet_urn=cabinet_urn, site=site, group=group
            )
        except InvalidRecordError:
            full = "refused"
        if fast is not None:
            assert isinstance(full, ParsedEntity)
            assert orjson.dumps(fast.data) == orjson.dumps(full.data)  # same keys, order, values, types
            assert fast.removed_fields == full.removed_fields


def test_streetlight_lamp_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streetlight_json, "LAMPS_KEPT", 3)
    adapter = StreetlightJsonAdapter(SITES)
    body = {"cabinet": "CAB-1", "ts": 1763971200000,
            "lamps": [{"id": f"L-{n}", "state": "ON", "dim": 50, "fault": None} for n in range(10)]}
    message = RawMessage(payload=orjson.dumps(body), source="t", received_at=RECEIVED, topic="c")
    entities = adapter.parse(message)
    assert len(entities) == 11 and len(adapter._lamps) <= 3
    assert entities[1].data["location"]["coordinates"] == [-3.70341, 40.41668]  # L-1 stands apart
    assert entities[2].data["refStreetlightGroup"] == "urn:ngsi-ld:StreetlightGroup:G-N"  # L-2's own group


# -- department CSV -------------------------------------------------------------------------------------


@FAST
@given(
    st.text(alphabet=';,"ab \t\r\n\x00\\\'', max_size=12),
    st.sampled_from([";", ",", "\t"]),
    st.sampled_from(['"', "'"]),
)
def test_csv_row_split_is_the_csv_module(text: str, separator: str, quotechar: str) -> None:
    assert outcome(department_csv._split, text, separator, quotechar) == outcome(
        plain_split, text, separator, quotechar
    )


def csv_adapter() -> DepartmentCsvAdapter:
    return DepartmentCsvAdapter(
        DepartmentCsvConfig.model_validate(
            {
                "entity_type": "WeatherObserved",
                "id_column": "station",
                "time": {"column": "time", "zone": "Europe/Madrid"},
                "columns": {"temp_F": {"property": "temperature", "unit": "FAH"},
                            "temp_C": {"property": "dewPoint", "unit": "CEL", "required": False}},
                "location": {"stations": {"S1": [-3.7, 40.4], "S 2": [-3.6, 40.5]}},
                "null_markers": ["-"],
            }
        )
    )


def row(text: str, header: str = "station,time,temp_F,temp_C") -> RawMessage:
    return RawMessage(payload=text.encode(), source="t", received_at=RECEIVED, context={"header": header})


def test_csv_station_ids_and_cell_values_are_remembered_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(department_csv, "_VALUE_CACHE_SIZE", 2)
    monkeypatch.setattr(department_csv, "_ID_CACHE_SIZE", 2)
    adapter = csv_adapter()
    (entity,) = adapter.parse(row("S1,2026-07-20T07:00:00,50,50"))
    assert (entity.data["temperature"], entity.data["dewPoint"]) == (10.0, 50)  # same text, other units
    for _ in range(2):
        assert result(adapter, row("S 2,2026-07-20T07:00:00,50,"))[0] == "invalid_id"
        assert result(adapter, row("-,2026-07-20T07:00:00,50,"))[0] == "missing_field"
        assert result(adapter, row("S1,2026-07-20T07:00:00,500,"))[0] == "out_of_range"
        assert result(adapter, row("S1,2026-07-20T07:00:00,-,"))[0] == "missing_field"
    for n in range(10):
        (entity,) = adapter.parse(row(f"S1,2026-07-20T07:00:00,{n + 32},-"))
        assert entity.data["temperature"] == round((n) * 5 / 9, 6) and "dewPoint" not in entity.data
        assert len(adapter._ids) <= 2 and all(len(seen) <= 2 for seen in adapter._values.values())
    assert result(adapter, row("S1,2026-07-20T07:00:00", header="station,time,temp_F"))[0] == "csv_field_count"
    (short,) = adapter.parse(row("S1,2026-07-20T07:00:00,41", header="station,time,temp_F"))
    assert short.data["temperature"] == 5.0 and "dewPoint" not in short.data


# -- care hubs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["heart_rate", " heart_rate", "HEART_RATE", "", "  ", 5, None, ["fall_detected"]])
def test_care_events_outside_the_known_names_are_refused_as_before(event: Any) -> None:
    body = {"hub": "H-1", "resident": "R-1", "event": event, "value": 60, "at": "2026-11-20T03:12:44+01:00"}
    got = result(CareHubAdapter(), RawMessage(payload=orjson.dumps(body), source="t", received_at=RECEIVED))
    if event == "heart_rate":
        assert got[0][0]["numValue"] == 60
    else:
        assert isinstance(got, tuple) and got[0] in {"unknown_event", "missing_field", "wrong_type"}


_CARE_KEYS = ("hub", "resident", "event", "value", "confidence", "at")
_care_ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True),
    st.sampled_from(["H-1029", "R-55812", "x" * 100, "x" * 101, "", " ", " H-1", "H-1 ", "H 1", "H-1\n", "H:1",
                     "urn:ngsi-ld:Device:H-1", "Ĥ-1", "-H", 7, 1.5, True, None, [], {}]),
)
_care_events = st.sampled_from(
    [*care_hub.ALERT_EVENTS, *care_hub.OBSERVATION_EVENTS, "medication_taken", " heart_rate", "HEART_RATE", "",
     5, None, True, ["fall_detected"], {}]
)
_care_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 19, 20, 250, 251, 20.0, 250.0, 19.999, 250.001, -0.0, 0.0, 2**63 - 1, -(2**63), 1e300, "72",
                     [], {}]),
)
_care_confidences = st.one_of(
    st.none(), st.booleans(), st.floats(-0.5, 1.5), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, -1, 0.0, 1.0, -0.0, 1.0000000001, -1e-12, 0.5, 0.8, 0.79999, "0.9", [], {}]),
)
_offsets = st.one_of(
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "+02:00", "+14:00", "-12:00", "+05:30", "-09:30",
                     "+23:00", "-23:00", "+24:00", "-24:00", "+0100", "+01", "+01:00:00", "", " ", "+01:60"]),
    st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}", st.sampled_from("+-"), st.integers(0, 25),
              st.sampled_from([0, 0, 0, 15, 30, 45])),
)
_fractions = st.one_of(
    st.just(""), st.sampled_from([".0", ".000", ".000000", ".5", ".250", ".999", ".999999", ".0001", ".000001",
                                  ".1234567", ".123456789", ".", ",500"]),
    st.from_regex(r"\.[0-9]{1,7}", fullmatch=True),
)
_usual_stamps = st.builds(
    lambda moment, fraction, offset: moment.strftime("%Y-%m-%dT%H:%M:%S").rjust(19, "0") + fraction + offset,
    st.one_of(st.datetimes(), st.datetimes(datetime(1969, 12, 31), datetime(1970, 1, 2)),
              st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1))),
    _fractions, _offsets,
)
_CARE_EDGE_STAMPS = [
    "2026-11-20T03:12:44+01:00", "2026-11-20T03:12:44+14:00",
    "2026-11-20T03:12:44-12:00", "2026-11-20T03:12:44+05:30", "2026-11-20T03:12:44-00:00",
    "0001-01-01T00:00:00+01:00", "0001-01-01T00:59:59-01:00",
    "9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999+00:00",
    "9999-12-31T23:59:59.999+01:00", "0999-12-31T23:59:59-01:00", "1000-01-01T00:30:00+01:00",
    "1000-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.999999+00:00",
    "1970-01-01T00:00:00.5+01:00", "2026-02-29T10:00:00+01:00", "2028-02-29T10:00:00+01:00",
    "2026-13-01T10:00:00+01:00", "2026-11-20T24:00:00+01:00", "2026-11-20T23:60:00+01:00",
    "2026-11-20T03:12:60+01:00", "2026-11-20T03:12:44", "2026-11-20 03:12:44+01:00", " 2026-11-20T03:12:44Z",
    "2026-11-20T03:12:44Z ", "2026-11-20t03:12:44Z", "20261120T031244+0100", "2026-11-20", "",
    "٢٠٢٦-11-20T03:12:44+01:00", "2026-11-20T03:12:44.+01:00",
]
_care_stamps = st.one_of(
    _usual_stamps,
    st.sampled_from(_CARE_EDGE_STAMPS),
    st.sampled_from([1795140764, 1795140764000, 1795140764.5, -1, 10**18, 2**63 - 1, True, False, None, [], {}]),
)
_care_bodies = st.fixed_dictionaries(
    {"hub": _care_ids, "resident": _care_ids, "event": _care_events, "value": _care_values,
     "confidence": _care_confidences, "at": _care_stamps},
    optional={"room": st.just("bedroom"), "resident_name": st.just("Maria"), "": st.just(1), "ñ x": st.none()},
)


def _usual_care_body(draw: st.DrawFn) -> dict[str, Any]:
    event = draw(st.sampled_from([*care_hub.ALERT_EVENTS, *care_hub.OBSERVATION_EVENTS]))
    value = {"heart_rate": draw(st.one_of(st.integers(20, 250), st.floats(20, 250))),
             "inactivity": draw(st.one_of(st.integers(0, 10**6), st.floats(0, 1e9)))}.get(event)
    body = {"hub": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True)),
            "resident": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,12}", fullmatch=True)),
            "event": event, "value": value,
            "confidence": draw(st.one_of(st.none(), st.floats(0, 1), st.sampled_from([0, 1]))),
            "at": draw(st.datetimes(datetime(1001, 1, 1), datetime(9998, 12, 31))).strftime("%Y-%m-%dT%H:%M:%S")
            + draw(st.sampled_from(["", ".000", ".5", ".250", ".999999"]))
            + draw(st.sampled_from(["Z", "+00:00", "+01:00", "-05:00", "+14:00", "-12:00"]))}
    for key in draw(st.sets(st.sampled_from(["value", "confidence"]))):
        if body[key] is None:
            del body[key]  # absent is null
    return body


_CARE_WILD = {"hub": _care_ids, "resident": _care_ids, "event": _care_events, "value": _care_values,
              "confidence": _care_confidences, "at": _care_stamps}


def _nearly_usual_care_body(draw: st.DrawFn) -> dict[str, Any]:
    """A usual message with one or two things changed: a value of another type or range, a key gone or added."""
    body = _usual_care_body(draw)
    for key in draw(st.lists(st.sampled_from([*_CARE_KEYS, "extra"]), min_size=1, max_size=2)):
        change = draw(st.sampled_from(["replace", "replace", "replace", "delete"]))
        if key == "extra":
            body[draw(st.sampled_from(["room", "resident_name", "", "ñ x"]))] = 1
        elif change == "delete":
            body.pop(key, None)
        else:
            body[key] = draw(_CARE_WILD[key])
    return body


def care_outcome(parse: Any, body: dict[str, Any] | bytes) -> Any:
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    message = RawMessage(payload=payload, source="t", received_at=RECEIVED, topic="city/care/hubs/H-1/events")
    try:
        # through orjson: 60 and 60.0, 0.0 and -0.0 are told apart, and the order of the keys counts
        return [(orjson.dumps(e.data), e.removed_fields) for e in parse(message)]
    except InvalidRecordError as exc:
        return (exc.reason, exc.detail, exc.field)


def assert_care_paths_agree(body: dict[str, Any] | bytes) -> Any:
    adapter = CareHubAdapter()
    expected = care_outcome(adapter.parse_general, body)
    for _ in range(2):  # once working the hour out, once from the table
        assert care_outcome(adapter.parse, body) == expected, body
    return expected


@FAST
@given(_care_bodies, st.sets(st.sampled_from(_CARE_KEYS), max_size=2))
def test_care_hub_messages_are_mapped_or_refused_as_the_general_path(body: dict[str, Any], missing: set[str]) -> None:
    for key in missing:
        del body[key]
    assert_care_paths_agree(body)


@FAST
@given(st.composite(_usual_care_body)())
def test_care_hub_usual_messages_take_the_fast_path(body: dict[str, Any]) -> None:
    expected = assert_care_paths_agree(body)
    assert isinstance(expected, list)
    assert care_hub._usual(orjson.loads(orjson.dumps(body))) is not None  # (not quietly the general path)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_nearly_usual_care_body)())
def test_care_hub_nearly_usual_messages_are_mapped_or_refused_as_the_general_path(body: dict[str, Any]) -> None:
    assert_care_paths_agree(body)


@pytest.mark.parametrize("at", _CARE_EDGE_STAMPS)
def test_care_hub_edge_timestamps_agree(at: str) -> None:
    for event in ("fall_detected", "heart_rate", "door_open"):
        for fraction in ("", ".5", ".000"):
            stamp = at[:19] + fraction + at[19:] if len(at) > 19 and at[19] in "+-Z" else at
            assert_care_paths_agree({"hub": "H-1", "resident": "R-1", "event": event, "confidence": 0.6,
                                     "value": 60 if event == "heart_rate" else None, "at": stamp})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, True, False, "60", None])
@pytest.mark.parametrize("event", ["heart_rate", "inactivity"])
def test_care_hub_values_json_cannot_carry_are_left_to_the_general_path(event: str, value: Any) -> None:
    body = {"hub": "H-1", "resident": "R-1", "event": event, "value": value, "at": "2026-11-20T03:12:44+01:00"}
    assert care_hub._usual(body) is None
    assert care_hub._usual({**body, "value": 60, "confidence": value}) is None or value is None


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b"null", b'"x"', b"\xff", b'{"hub": "H-1", "hub": "H-2"}', b"{}",
     b'{"hub":"H-1","resident":"R-1","event":"heart_rate","value":60,"at":"2026-11-20T03:12:44+01:00"}',
     b'{"hub":"H-1","resident":"R-1","event":"heart_rate","value":1e400,"at":"2026-11-20T03:12:44+01:00"}'],
)
def test_care_hub_odd_payloads_agree(payload: bytes) -> None:
    assert_care_paths_agree(payload)


def test_care_hub_samples_agree() -> None:
    lines = (Path(__file__).parents[2] / "adapters" / "samples" / "care-hub" / "messages.jsonl").read_bytes()
    for line in lines.splitlines():
        capture = orjson.loads(line)
        if isinstance(capture.get("payload"), dict):
            assert_care_paths_agree(capture["payload"])


def test_care_hub_hour_table_is_bounded_and_holds_no_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(care_hub, "HOURS_KEPT", 3)
    care_hub._UTC_HOURS.clear()
    adapter = CareHubAdapter()
    for hour in range(10):
        body = {"hub": "H-7731", "resident": "R-90817", "event": "heart_rate", "value": 60,
                "at": f"2026-11-20T{hour:02d}:05:00+01:00"}
        (entity,) = adapter.parse(RawMessage(payload=orjson.dumps(body), source="t", received_at=RECEIVED))
        assert entity.data["dateObserved"] == f"2026-11-{20 - (hour == 0)}T{(hour - 1) % 24:02d}:05:00Z"
        assert len(care_hub._UTC_HOURS) <= 3
        assert "7731" not in repr(care_hub._UTC_HOURS) and "90817" not in repr(care_hub._UTC_HOURS)
    care_hub._UTC_HOURS.clear()
    adapter.parse_general(RawMessage(payload=orjson.dumps(body), source="t", received_at=RECEIVED))
    assert "H-7731" not in fields._CHECKED_IDS  # a hub is one person's: no path remembers its id


def test_values_compare_as_numbers_of_their_own_type() -> None:
    """The value tables are keyed by text: '50' and '50.0' are different texts of different types."""
    adapter = _ul_adapter()
    (whole,) = adapter.parse(ul("t|50"))
    (decimal,) = adapter.parse(ul("t|50.0"))
    assert isinstance(whole.data["temperature"], int) and isinstance(decimal.data["temperature"], float)
    assert not math.isnan(decimal.data["temperature"])


# -- The Things Stack uplinks -------------------------------------------------------------------------


def test_ttn_readings_converted_once_keep_their_type_and_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttn_v3, "CONVERTED_KEPT", 3)
    warm = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config())
    readings: list[dict[str, Any]] = [
        {"pm10": 50, "humidity": 50}, {"pm10": 50.0, "humidity": 50.0}, {"pm10": 0.0, "humidity": 0},
        {"pm10": -0.0, "humidity": -0.0}, {"pm10": 0, "humidity": 0.0}, {"pm10": 1e300}, {"pm10": -1},
        {"pm10": 12.5, "humidity": 101}, {"pm10": 12.5, "humidity": 100}, {"pm10": True}, {"pm10": "7"},
        {"pm10": 10**19}, {"pm10": 3, "pm2_5": 3.0, "battery": 55}, {"battery": 55.0}, {"battery": 0.0},
    ]
    for decoded in readings * 2:
        doc = ttn_message(uplink(decoded))
        fresh = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config())
        got, expected = result(warm, doc), result(fresh, doc)
        if isinstance(expected, tuple):
            assert got == expected
        else:  # through orjson: 50 and 50.0, 0.0 and -0.0 are told apart
            assert orjson.dumps([e for e, _ in got]) == orjson.dumps([e for e, _ in expected]), decoded
    assert all(len(target.converted) <= 3 for target in warm._profiles["default"].targets.values())


# The Things Stack usual uplinks against the general path: four configurations (the shipped default, the
# sample's, one refusing unknown devices and applications, one ignoring unknown keys), usual and
# mutated uplinks.

_TTN_LOOSE = {
    "fields": {
        "laeq": {"entity_type": "NoiseLevelObserved", "property": "LAeq"},
        "t_f": {"entity_type": "WeatherObserved", "property": "temperature", "unit": "FAH"},
        "bat": {"entity_type": "Device", "property": "batteryLevel", "unit": "C62"},
    },
    "unknown_fields": "ignore",
    "noise_period_s": 900,
}
_TTN_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "sample": orjson.loads((Path(__file__).parents[2] / "adapters/samples/ttn-v3/config.json").read_bytes()),
    "strict": {
        "applications": ["city-air", "city-noise"],
        "unknown_devices": "reject",
        "profiles": {"loose": _TTN_LOOSE},
        "devices": {"aq-rambla-03": {"entity_name": "aq.rambla.3"}, "nz-1": {"profile": "loose"},
                    "noise-mercat-01": {"profile": "loose", "location": [2.1719, 41.3823]}},
    },
    "loose": {"profiles": {"default": _TTN_LOOSE}},
}
_TTN_DEVICES = ["aq-rambla-03", "noise-mercat-01", "nz-1", "lora-test-99"]
_TTN_APPS = ["city-air", "city-noise", "city-air-quality", "other-app"]
_TTN_KEYS = ["pm2_5", "pm25", "pm10", "pm1", "no2", "o3", "temperature", "humidity", "pressure", "laeq", "LAmax",
             "period_s", "battery", "battery_pct", "battery_v", "leq", "lmax", "interval_min", "bat_v", "status",
             "t_f", "bat", "extra"]
_ttn_stamps = st.builds(
    lambda moment, digits, fraction: moment.strftime("%Y-%m-%dT%H:%M:%S")
    + ("" if digits == 0 else "." + str(fraction).zfill(9)[:digits]) + "Z",
    st.datetimes(datetime(1000, 1, 2), datetime(9999, 12, 30)),
    st.integers(0, 10),
    st.integers(0, 999_999_999),
)
_TTN_EDGE_STAMPS = [
    "2025-04-16T25:00:00Z", "2025-02-30T10:00:00Z", "2025-04-16T11:54:60Z", "0999-12-31T23:59:59.5Z",
    "1000-01-01T00:00:00Z", "1000-01-01T00:00:30.25Z", "9999-12-31T23:59:59.999999999Z", "2025-04-16T11:54:13.Z",
    "2025-04-16T11:54:13z", "2025-04-16T11:54:13", "2025-04-16T13:54:13.123456789+02:00", "2025-04-16 11:54:13Z",
    "2025-04-16T11:54:13.0000001Z", "2025-04-16T11:54:13.0009Z", " 2025-04-16T11:54:13Z", "", "yesterday",
    "٢٠٢٥-04-16T11:54:13Z", 1744804453, 1744804453.5, True, None, [], {},
]
_ttn_any_stamp = st.one_of(_ttn_stamps, st.sampled_from(_TTN_EDGE_STAMPS))
_ttn_numbers = st.one_of(
    st.integers(-5, 2000), st.floats(-5, 2000), st.sampled_from([0, 0.0, -0.0, 1, 15, 60, 3.3, 3.6, 5.5, 100])
)
_ttn_wild = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False),
    _ttn_numbers, st.text(max_size=4), _ttn_any_stamp,
    st.sampled_from(["", " ", "aq-rambla-03", "lora-test-99", "bad id!", "urn:ngsi-ld:Device:x", "city-air", "9.8"]),
    st.lists(st.integers(-100, 100), max_size=2), st.dictionaries(st.sampled_from(["rssi", "user", "x"]),
                                                                 st.integers(-300, 30), max_size=2),
)


def _usual_ttn_uplink(draw: st.DrawFn) -> dict[str, Any]:
    decoded = {key: draw(st.one_of(_ttn_numbers, st.none()) if draw(st.integers(0, 9)) == 0 else _ttn_numbers)
               for key in draw(st.lists(st.sampled_from(_TTN_KEYS), min_size=1, max_size=6, unique=True))}
    heard = draw(st.one_of(st.none(), _ttn_stamps))
    doc = uplink(decoded, received_at=heard, f_port=draw(st.integers(1, 223)))
    doc["received_at"] = draw(_ttn_stamps)
    doc["end_device_ids"]["device_id"] = draw(st.sampled_from(_TTN_DEVICES))
    doc["end_device_ids"]["application_ids"]["application_id"] = draw(st.sampled_from(_TTN_APPS))
    up = doc["uplink_message"]
    up["rx_metadata"] = [
        {"gateway_ids": {"gateway_id": f"gw-{i}"}, **draw(st.sampled_from([
            {"rssi": draw(st.one_of(st.integers(-130, -20), st.floats(-130, -20)))},
            {"channel_rssi": draw(st.integers(-130, -20))}, {"rssi": None, "channel_rssi": -50}, {}]))}
        for i in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        up["locations"] = {"user": {"latitude": draw(st.one_of(st.floats(-90, 90), st.integers(-90, 90))),
                                    "longitude": draw(st.one_of(st.floats(-180, 180), st.integers(-180, 180)))}}
    else:
        del up["locations"]
    if draw(st.booleans()):
        up["last_battery_percentage"] = {"value": draw(st.one_of(st.integers(0, 100), st.floats(0, 100)))}
    if up["received_at"] is None and draw(st.booleans()):
        del up["received_at"]
    return doc


_TTN_PATHS: list[tuple[Any, ...]] = [
    ("received_at",), ("end_device_ids",), ("end_device_ids", "device_id"), ("end_device_ids", "application_ids"),
    ("end_device_ids", "application_ids", "application_id"), ("uplink_message",), ("uplink_message", "f_port"),
    ("uplink_message", "decoded_payload"), ("uplink_message", "decoded_payload", "pm10"),
    ("uplink_message", "decoded_payload", "laeq"), ("uplink_message", "decoded_payload", "interval_min"),
    ("uplink_message", "decoded_payload", "period_s"), ("uplink_message", "decoded_payload", "bat_v"),
    ("uplink_message", "decoded_payload", "battery"), ("uplink_message", "decoded_payload", "unknown"),
    ("uplink_message", "received_at"), ("uplink_message", "rx_metadata"), ("uplink_message", "rx_metadata", 0),
    ("uplink_message", "rx_metadata", 0, "rssi"), ("uplink_message", "locations"),
    ("uplink_message", "locations", "user"), ("uplink_message", "locations", "user", "latitude"),
    ("uplink_message", "locations", "user", "longitude"), ("uplink_message", "last_battery_percentage"),
    ("name",), ("result",), ("data",), ("join_accept",),
]


def _nearly_usual_ttn_uplink(draw: st.DrawFn) -> dict[str, Any]:
    """A usual uplink with one to three things changed: a value of another type or range, a key gone or added."""
    doc = _usual_ttn_uplink(draw)
    for path in draw(st.lists(st.sampled_from(_TTN_PATHS), min_size=1, max_size=3)):
        parent: Any = doc
        for step in path[:-1]:
            parent = parent.get(step) if isinstance(parent, dict) else (
                parent[step] if isinstance(parent, list) and isinstance(step, int) and len(parent) > step else None)
        if isinstance(parent, dict):
            if draw(st.integers(0, 3)) == 0:
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(_ttn_wild)
        elif isinstance(parent, list) and isinstance(path[-1], int) and len(parent) > path[-1]:
            parent[path[-1]] = draw(_ttn_wild)
    return doc


def ttn_outcome(parse: Any, message: RawMessage) -> Any:
    try:
        # through orjson: 60 and 60.0, 0.0 and -0.0 are told apart, and the order of the keys counts
        return [(orjson.dumps(e.data), e.removed_fields) for e in parse(message)]
    except InvalidRecordError as exc:
        return (exc.reason, exc.detail, exc.field)
    except (ValueError, ArithmeticError) as exc:  # (what the general path lets out, the fast path must too)
        return (type(exc).__name__, str(exc))


def assert_ttn_paths_agree(doc: dict[str, Any] | bytes, config: str) -> Any:
    adapter = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config.model_validate(_TTN_CONFIGS[config]))
    message = ttn_message(doc)
    expected = ttn_outcome(adapter.parse_general, message)
    for _ in range(2):  # once resolving the device and the shape, once from the tables
        assert ttn_outcome(adapter.parse, message) == expected, (config, doc)
    return expected


@FAST
@given(st.composite(_usual_ttn_uplink)(), st.sampled_from(sorted(_TTN_CONFIGS)))
def test_ttn_usual_uplinks_take_the_fast_path_when_accepted(doc: dict[str, Any], config: str) -> None:
    expected = assert_ttn_paths_agree(doc, config)
    adapter = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config.model_validate(_TTN_CONFIGS[config]))
    fast = adapter._usual(orjson.loads(orjson.dumps(doc)))
    assert (fast is not None) == isinstance(expected, list), (config, doc, expected)  # (not quietly the general path)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.composite(_nearly_usual_ttn_uplink)(), st.sampled_from(sorted(_TTN_CONFIGS)))
def test_ttn_nearly_usual_uplinks_are_mapped_or_refused_as_the_general_path(doc: dict[str, Any], config: str) -> None:
    assert_ttn_paths_agree(doc, config)


@pytest.mark.parametrize("stamp", _TTN_EDGE_STAMPS)
@pytest.mark.parametrize("where", ["received_at", "uplink_message.received_at"])
def test_ttn_edge_timestamps_agree(stamp: Any, where: str) -> None:
    for decoded in ({"pm10": 17.3, "laeq": 61.2, "period_s": 86400}, {"battery": 50}):
        doc = uplink(decoded)
        if where == "received_at":
            doc["received_at"] = stamp
        else:
            doc["uplink_message"]["received_at"] = stamp
        for config in _TTN_CONFIGS:
            assert_ttn_paths_agree(doc, config)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**30, -(10**30), 2**64 - 1, True, "9.8", [], None])
@pytest.mark.parametrize("key", ["pm10", "battery", "period_s", "rssi", "latitude", "f_port"])
def test_ttn_values_json_cannot_carry_are_left_to_the_general_path(key: str, value: Any) -> None:
    doc = uplink({"pm10": 17.3, "laeq": 50, "period_s": 60, "battery": 80})
    up = doc["uplink_message"]
    {"rssi": up["rx_metadata"][0], "latitude": up["locations"]["user"], "f_port": up}.get(
        key, up["decoded_payload"])[key] = value
    adapter = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config())
    fast = adapter._usual(json.loads(json.dumps(doc)))
    general = ttn_outcome(lambda _: adapter._general(json.loads(json.dumps(doc))), ttn_message(b"{}"))
    if fast is None:
        return
    assert [(orjson.dumps(e.data), e.removed_fields) for e in fast] == general, (key, value)


@pytest.mark.parametrize(
    "payload",
    [b"", b"{", b"[]", b"null", b"\xff", b"{}", b'{"result": {}}', b'{"name": "as.up.data.forward", "data": {}}',
     orjson.dumps({"result": uplink()}), orjson.dumps({"name": "as.up.data.forward", "data": uplink()}),
     orjson.dumps({"name": "as.up.join.forward", "data": uplink()}), orjson.dumps({**uplink(), "name": "x"}),
     orjson.dumps({**uplink(), "join_accept": {}}), orjson.dumps(uplink({"pm10": 17.3, "pm25": 9.8, "pm2_5": 9.8})),
     orjson.dumps(uplink({f"k{i}": i for i in range(70)})), orjson.dumps(uplink({"pm10": 17.3, "battery_v": 3.3})),
     b'{"end_device_ids": {"device_id": "a", "device_id": "b"}}'],
)
def test_ttn_odd_payloads_agree(payload: bytes) -> None:
    for config in _TTN_CONFIGS:
        assert_ttn_paths_agree(payload, config)


def test_ttn_samples_agree() -> None:
    lines = (Path(__file__).parents[2] / "adapters" / "samples" / "ttn-v3" / "messages.jsonl").read_bytes()
    for line in lines.splitlines():
        payload = orjson.loads(line).get("payload")
        for config in _TTN_CONFIGS:
            assert_ttn_paths_agree(payload if isinstance(payload, dict) else str(payload).encode(), config)


def test_ttn_device_and_shape_tables_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ttn_v3, "DEVICES_KEPT", 3)
    monkeypatch.setattr(ttn_v3, "SHAPES_KEPT", 2)
    adapter = ttn_v3.TtnV3Adapter(ttn_v3.TtnV3Config())
    keys = ["pm10", "pm2_5", "no2", "o3", "temperature"]
    for index in range(10):
        doc = uplink({keys[index % 5]: 10, keys[(index + 1) % 5]: 20})
        doc["end_device_ids"]["device_id"] = f"aq-{index}"
        assert adapter._usual(orjson.loads(orjson.dumps(doc))) is not None
        assert len(adapter._devices) <= 3 and len(adapter._shapes) <= 2
