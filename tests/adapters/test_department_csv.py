"""Department CSV adapter: encodings, separators, decimal commas, headers, streaming, ugly rows."""

from __future__ import annotations

import json
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapters.base import load_config
from adapters.department_csv import DepartmentCsvAdapter, DepartmentCsvConfig
from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.message import RawMessage
from tests.adapters.validity import assert_valid

RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "samples" / "department-csv"
S1 = [-3.7074, 40.4155]


def noise_mapping(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "entity_type": "NoiseLevelObserved",
        "id_column": "station",
        "time": {"column": "hour", "format": "%d/%m/%Y %H:%M", "zone": "Europe/Madrid", "column_marks": "start"},
        "interval_minutes": 60,
        "separator": ";",
        "decimal": ",",
        "columns": {
            "LAeq": {"property": "LAeq", "unit": "2N"},
            "LAmax": {"property": "LAmax", "unit": "2N"},
            "LAS": {"property": "LAS", "unit": "2N", "required": False},
        },
        "header_aliases": {"LAeq (dB)": "LAeq", "Leq": "LAeq", "Estación": "station"},
        "location": {"stations": {"S1": S1, "S2": [-3.6883, 40.4530]}},
    }
    doc.update(overrides)
    return doc


def weather_mapping(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "entity_type": "WeatherObserved",
        "id_column": "station",
        "time": {"column": "time", "zone": "Europe/Madrid"},
        "separator": ",",
        "columns": {
            "temp_F": {"property": "temperature", "unit": "FAH"},
            "rh": {"property": "relativeHumidity", "unit": "P1"},
        },
        "location": {"lon_column": "lon", "lat_column": "lat"},
    }
    doc.update(overrides)
    return doc


def make(doc: dict[str, Any]) -> DepartmentCsvAdapter:
    return DepartmentCsvAdapter(DepartmentCsvConfig.model_validate(doc))


def write(tmp_path: Path, content: bytes | str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def run(adapter: DepartmentCsvAdapter, path: Path, max_bytes: int = 65536) -> list[tuple[int, Any]]:
    """(line, entity data or rejection reason) for every record of the file."""
    out: list[tuple[int, Any]] = []
    for message in adapter.read(path, received_at=RECEIVED, max_bytes=max_bytes):
        line = int(message.context["line"])
        if message.defect is not None:
            out.append((line, message.defect.reason))
            continue
        try:
            (entity,) = adapter.parse(message)
        except InvalidRecordError as exc:
            error = exc
        else:
            out.append((line, entity.data))
            continue
        assert error.detail, error.reason
        out.append((line, error.reason))
    return out


def messages(adapter: DepartmentCsvAdapter, path: Path) -> list[RawMessage]:
    return list(adapter.read(path, received_at=RECEIVED, max_bytes=65536))


# -- the files departments write -------------------------------------------------------------------


def test_latin1_semicolons_decimal_commas_and_header_aliases(tmp_path: Path) -> None:
    text = "Estación;hour;LAeq (dB);LAmax;LAS\r\nS1;20/11/2025 08:00;55,3;70,1;53,9\r\n"
    path = write(tmp_path, text.encode("latin-1"))
    (row,) = run(make(noise_mapping(encoding="latin-1")), path)
    assert row == (
        2,
        {
            "id": "urn:ngsi-ld:NoiseLevelObserved:S1",
            "type": "NoiseLevelObserved",
            "dateObservedFrom": "2025-11-20T07:00:00Z",
            "dateObservedTo": "2025-11-20T08:00:00Z",
            "dateObserved": "2025-11-20T07:00:00Z/2025-11-20T08:00:00Z",
            "location": {"type": "Point", "coordinates": S1},
            "LAeq": 55.3,
            "LAmax": 70.1,
            "LAS": 53.9,
        },
    )
    assert_valid(row[1])


def test_payload_is_utf8_and_the_record_carries_its_header(tmp_path: Path) -> None:
    text = "Estación;hour;Leq;LAmax\nS1;20/11/2025 08:00;55,3;70,1\n"
    path = write(tmp_path, text.encode("latin-1"))
    (message,) = messages(make(noise_mapping(encoding="latin-1")), path)
    assert message.payload == b"S1;20/11/2025 08:00;55,3;70,1"
    assert message.context == {"line": 2, "header": "Estación;hour;Leq;LAmax", "file": str(path)}
    assert message.source == f"{path}:2"


def test_a_row_parses_again_from_the_quarantine_alone(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;LAmax\nS3;20/11/2025 08:00;55,3;70,1\n")
    (message,) = messages(make(noise_mapping()), path)
    with pytest.raises(InvalidRecordError) as info:
        make(noise_mapping()).parse(message)
    assert info.value.reason == "unknown_station"
    # later, with the station added to the mapping, from the stored payload and context only
    stored = RawMessage(
        payload=message.payload, source="quarantine", received_at=RECEIVED, context=dict(message.context)
    )
    fixed = noise_mapping(location={"stations": {"S3": [-3.70, 40.42]}})
    (entity,) = make(fixed).parse(stored)
    assert entity.data["LAeq"] == 55.3


def test_utf8_bom_blank_lines_crlf_and_quoted_fields(tmp_path: Path) -> None:
    body = (
        "station;hour;LAeq;LAmax;note\r\n"
        "\r\n"
        'S1;20/11/2025 08:00;"55,3";"70,1";"works; street closed"\r\n'
        "   \r\n"
        'S2;20/11/2025 08:00;56;71;"two\r\nlines"\r\n'
        'S2;20/11/2025 09:00;57;72;"say ""hi"""\r\n'
    )
    path = write(tmp_path, b"\xef\xbb\xbf" + body.encode("utf-8"))
    adapter = make(noise_mapping(decimal=","))
    assert messages(adapter, path)[0].context["header"] == "station;hour;LAeq;LAmax;note"
    rows = run(adapter, path)
    assert [line for line, _ in rows] == [3, 5, 7]
    assert [data["LAeq"] for _, data in rows] == [55.3, 56, 57]


def test_fahrenheit_and_percent_are_converted(tmp_path: Path) -> None:
    path = write(tmp_path, "station,time,temp_F,rh,lon,lat\nwx-1,2025-11-20T08:00,50.9,76,-3.6823,40.4153\n")
    ((_, entity),) = run(make(weather_mapping()), path)
    assert entity["temperature"] == 10.5
    assert entity["relativeHumidity"] == 0.76
    assert entity["dateObserved"] == "2025-11-20T07:00:00Z"
    assert entity["location"] == {"type": "Point", "coordinates": [-3.6823, 40.4153]}
    assert_valid(entity)


def test_coordinates_with_decimal_commas(tmp_path: Path) -> None:
    mapping = weather_mapping(separator=";", decimal=",")
    path = write(tmp_path, "station;time;temp_F;rh;lon;lat\nwx-1;2025-11-20T08:00;50,9;76;-3,6823;40,4153\n")
    ((_, entity),) = run(make(mapping), path)
    assert entity["location"]["coordinates"] == [-3.6823, 40.4153]
    path = write(tmp_path, "station;time;temp_F;rh;lon;lat\nwx-1;2025-11-20T08:00;50,9;76;40,4;-93,7\n")
    assert run(make(mapping), path) == [(2, "out_of_range")]


def test_the_shipped_weather_sample(tmp_path: Path) -> None:
    folder = SAMPLES / "weather"
    adapter = DepartmentCsvAdapter.from_config_file(folder / "config.json")
    assert isinstance(adapter, DepartmentCsvAdapter)
    rows = run(adapter, folder / "weather-hourly.csv")
    good = [data for _, data in rows if isinstance(data, dict)]
    assert len(good) == 4
    for entity in good:
        assert_valid(entity)
    assert [reason for _, reason in rows if isinstance(reason, str)] == [
        "out_of_range",
        "missing_field",
        "out_of_range",
    ]


# -- wrong files -----------------------------------------------------------------------------------


def test_missing_columns_reject_every_row_naming_them(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;Lden;LAmax\nS1;20/11/2025 08:00;55;70\nS2;20/11/2025 08:00;56;71\n\n")
    adapter = make(noise_mapping())
    rows = run(adapter, path)
    assert rows == [(2, "csv_columns"), (3, "csv_columns")]
    with pytest.raises(InvalidRecordError) as info:
        adapter.parse(messages(adapter, path)[0])
    assert "'LAeq'" in info.value.detail and "'Lden'" in info.value.detail and "'LAmax'" in info.value.detail


def test_wrong_separator_is_reported_as_missing_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "station,hour,LAeq,LAmax\nS1,20/11/2025 08:00,55,70\n")
    assert run(make(noise_mapping()), path) == [(2, "csv_columns")]


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;Leq;LAmax\nS1;20/11/2025 08:00;55;55;70\n")
    assert run(make(noise_mapping()), path) == [(2, "csv_columns")]


def test_rows_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55\nS1;20/11/2025 09:00;55;70;extra\n")
    assert run(make(noise_mapping()), path) == [(2, "csv_field_count"), (3, "csv_field_count")]


def test_unterminated_quote_at_the_end_of_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\nS1;"20/11/2025 09:00;55;70\n')
    rows = run(make(noise_mapping()), path)
    assert isinstance(rows[0][1], dict)
    assert rows[1:] == [(3, "csv_syntax")]


def test_bad_quoting_inside_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;"55"x;70\n')
    assert run(make(noise_mapping()), path) == [(2, "csv_syntax")]


def test_non_utf8_row_in_a_utf8_file(tmp_path: Path) -> None:
    path = write(
        tmp_path, b"station;hour;LAeq;LAmax;note\nS1;20/11/2025 08:00;55;70;ca\xf1o\nS2;20/11/2025 08:00;56;71;ok\n"
    )
    rows = run(make(noise_mapping()), path)
    assert rows[0] == (2, "not_utf8")
    assert isinstance(rows[1][1], dict)


def test_header_not_in_the_declared_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, "Estación;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\n".encode("latin-1"))
    assert run(make(noise_mapping()), path) == [(2, "csv_header")]  # declared utf-8, written Latin-1


def test_undecodable_row_in_a_single_byte_encoding(tmp_path: Path) -> None:
    path = write(tmp_path, b"station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\x81\n")
    assert run(make(noise_mapping(encoding="cp1252")), path) == [(2, "bad_encoding")]


def test_over_long_rows_are_cut_and_the_next_row_survives(tmp_path: Path) -> None:
    long_row = "S1;20/11/2025 08:00;55;" + "7" * 5000
    path = write(tmp_path, f"station;hour;LAeq;LAmax\n{long_row}\nS2;20/11/2025 08:00;56;71\n")
    adapter = make(noise_mapping())
    found = list(adapter.read(path, received_at=RECEIVED, max_bytes=1024))
    assert found[0].defect is not None and found[0].defect.reason == "payload_too_large"
    assert len(found[0].payload) == 1024 and found[0].context["truncated"] is True
    assert found[1].context["line"] == 3 and adapter.parse(found[1])


def test_a_record_without_its_header_cannot_be_read() -> None:
    message = RawMessage(payload=b"S1;20/11/2025 08:00;55;70", source="x", received_at=RECEIVED)
    with pytest.raises(InvalidRecordError) as info:
        make(noise_mapping()).parse(message)
    assert info.value.reason == "csv_header"


def test_garbled_payload_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\n")
    adapter = make(noise_mapping())
    (good,) = messages(adapter, path)
    for payload, reason in [
        (b"", "csv_field_count"),
        (b"\xff\xfe", "not_utf8"),
        (b"S1;20/11/2025 08:00;55", "csv_field_count"),
        (b"S1;20/11/2025 08:00;5\x005;70", "wrong_type"),
    ]:
        with pytest.raises(InvalidRecordError) as info:
            adapter.parse(good._replace(payload=payload))
        assert info.value.reason == reason, payload


# -- bad values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("S1;20/11/2025 08:00;sesenta;70", "wrong_type"),
        ("S1;20/11/2025 08:00;61.5;70", "wrong_type"),  # a point where the decimal mark is a comma
        ("S1;20/11/2025 08:00;1.061,5;70", "wrong_type"),
        ("S1;20/11/2025 08:00;NaN;70", "wrong_type"),
        ("S1;20/11/2025 08:00;;70", "missing_field"),
        ("S1;20/11/2025 08:00;-;70", "wrong_type"),
        ("S1;20/11/2025 08:00;255;70", "out_of_range"),
        ("S9;20/11/2025 08:00;55;70", "unknown_station"),
        (";20/11/2025 08:00;55;70", "missing_field"),
        ("S 1;20/11/2025 08:00;55;70", "invalid_id"),
        ("S1;;55;70", "missing_field"),
        ("S1;32/11/2025 08:00;55;70", "invalid_timestamp"),
        ("S1;2025-11-20T08:00;55;70", "invalid_timestamp"),
        ("S1;26/10/2025 02:30;55;70", "ambiguous_local_time"),
        ("S1;30/03/2025 02:30;55;70", "nonexistent_local_time"),
    ],
)
def test_bad_cells(tmp_path: Path, row: str, reason: str) -> None:
    path = write(tmp_path, f"station;hour;LAeq;LAmax\n{row}\n")
    assert run(make(noise_mapping()), path) == [(2, reason)]


def test_null_markers_read_as_empty_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;LAmax;LAS\nS1;20/11/2025 08:00;55;70;-\nS1;20/11/2025 09:00;-;70;50\n")
    rows = run(make(noise_mapping(null_markers=["-", "n/d"])), path)
    assert "LAS" not in rows[0][1]
    assert rows[1] == (3, "missing_field")  # LAeq is required


def test_a_row_with_no_measured_value(tmp_path: Path) -> None:
    mapping = noise_mapping(columns={"LAeq": {"property": "LAeq", "required": False}})
    path = write(tmp_path, "station;hour;LAeq\nS1;20/11/2025 08:00;\n")
    assert run(make(mapping), path) == [(2, "missing_field")]


def test_optional_column_absent_from_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\n")
    ((_, entity),) = run(make(noise_mapping()), path)
    assert "LAS" not in entity


# -- times -----------------------------------------------------------------------------------------


def test_from_and_to_columns(tmp_path: Path) -> None:
    mapping = noise_mapping(time={"from": "from", "to": "to"}, interval_minutes=None)
    path = write(
        tmp_path,
        "station;from;to;LAeq;LAmax\n"
        "S1;2025-11-20T08:00:00+01:00;2025-11-20T08:15:00+01:00;55;70\n"
        "S1;2025-11-20T08:15:00Z;2025-11-20T08:15:00Z;55;70\n"
        "S1;2025-11-20T08:15:00;2025-11-20T08:30:00;55;70\n",
    )
    rows = run(make(mapping), path)
    assert rows[0][1]["dateObservedFrom"] == "2025-11-20T07:00:00Z"
    assert rows[0][1]["dateObservedTo"] == "2025-11-20T07:15:00Z"
    assert rows[1:] == [(3, "invalid_interval"), (4, "timestamp_without_zone")]
    mapping = noise_mapping(time={"from": "from", "to": "to", "zone": "UTC"}, interval_minutes=60)
    assert run(make(mapping), path)[0] == (2, "invalid_interval")  # 15 minutes, not 60


def test_single_column_marking_the_end_of_the_period(tmp_path: Path) -> None:
    mapping = noise_mapping(time={"column": "hour", "format": "%d/%m/%Y %H:%M", "zone": "UTC", "column_marks": "end"})
    path = write(tmp_path, "station;hour;LAeq;LAmax\nS1;20/11/2025 08:00;55;70\n")
    ((_, entity),) = run(make(mapping), path)
    assert (entity["dateObservedFrom"], entity["dateObservedTo"]) == ("2025-11-20T07:00:00Z", "2025-11-20T08:00:00Z")


def test_date_and_hour_in_two_columns_and_formats_with_offsets(tmp_path: Path) -> None:
    mapping = noise_mapping(
        time={"column": ["date", "hour"], "format": "%d/%m/%Y %H:%M%z", "column_marks": "start"},
    )
    path = write(tmp_path, "station;date;hour;LAeq;LAmax\nS1;20/11/2025;08:00+0100;55;70\nS1;20/11/2025;09:00;55;70\n")
    rows = run(make(mapping), path)
    assert rows[0][1]["dateObservedFrom"] == "2025-11-20T07:00:00Z"
    assert rows[1] == (3, "invalid_timestamp")  # the format asks for an offset


# -- configuration ---------------------------------------------------------------------------------


def _config_error(doc: dict[str, Any], tmp_path: Path) -> str:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_config(DepartmentCsvConfig, path)
    return str(info.value)


def test_configuration_errors(tmp_path: Path) -> None:
    noisy = noise_mapping()
    del noisy["interval_minutes"]
    assert "interval_minutes" in _config_error(noisy, tmp_path)
    assert "column_marks" in _config_error(noise_mapping(time={"column": "hour", "zone": "UTC"}), tmp_path)
    assert "instant" in _config_error(weather_mapping(time={"from": "a", "to": "b"}), tmp_path)
    assert "not both" in _config_error(weather_mapping(time={"column": "t", "from": "a", "to": "b"}), tmp_path)
    assert "cannot be converted" in _config_error(
        weather_mapping(columns={"t": {"property": "temperature", "unit": "P1"}}), tmp_path
    )
    assert "no measured property" in _config_error(weather_mapping(columns={"t": {"property": "LAeq"}}), tmp_path)
    assert "both fill" in _config_error(
        weather_mapping(columns={"a": {"property": "temperature"}, "b": {"property": "temperature", "unit": "FAH"}}),
        tmp_path,
    )
    assert "ASCII-compatible" in _config_error(weather_mapping(encoding="utf-16"), tmp_path)
    assert "unknown encoding" in _config_error(weather_mapping(encoding="klingon"), tmp_path)
    assert "clashes" in _config_error(weather_mapping(decimal=","), tmp_path)
    assert "does not use" in _config_error(weather_mapping(header_aliases={"Temp": "temperature"}), tmp_path)
    assert "unknown time zone" in _config_error(weather_mapping(time={"column": "t", "zone": "Mars/Olympus"}), tmp_path)
    assert "columns" in _config_error(weather_mapping(columns={}), tmp_path)
    assert "entity_type" in _config_error(weather_mapping(entity_type="Streetlight"), tmp_path)


def test_requires_a_mapping_and_the_sample_loads() -> None:
    with pytest.raises(ConfigurationError):
        DepartmentCsvAdapter()
    assert isinstance(DepartmentCsvAdapter.from_config_file(SAMPLES / "config.json"), DepartmentCsvAdapter)


# -- streaming -------------------------------------------------------------------------------------


def test_a_200000_row_file_streams_with_flat_memory(tmp_path: Path) -> None:
    rows = 200_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("station;from;to;LAeq;LAmax\n")
        block = "S1;2025-11-20T08:00:00Z;2025-11-20T09:00:00Z;55,3;70,1\n" * 1000
        for _ in range(rows // 1000):
            handle.write(block)
    size = path.stat().st_size
    adapter = make(noise_mapping(time={"from": "from", "to": "to"}, interval_minutes=None))
    first: RawMessage | None = None
    count = 0
    started = time.perf_counter()
    tracemalloc.start()
    try:
        for message in adapter.read(path, received_at=RECEIVED, max_bytes=65536):
            if first is None:
                first = message
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    assert count == rows
    assert first is not None and adapter.parse(first)[0].data["LAeq"] == 55.3
    assert peak < 256 * 1024, f"peak {peak} bytes while streaming a {size}-byte file"
    assert size > 40 * peak
    assert elapsed < 20, f"streaming took {elapsed:.1f} s"


def test_rows_sharing_their_time_cells_get_their_own_entities(tmp_path: Path) -> None:
    # times are converted once per distinct set of cells; each row still gets a dict of its own, and a
    # bad time is refused on every row that has it
    path = write(
        tmp_path,
        "station;hour;LAeq;LAmax\n"
        "S1;20/11/2025 08:00;55;70\n"
        "S2;20/11/2025 08:00;56;71\n"
        "S1;31/11/2025 08:00;55;70\n"
        "S2;31/11/2025 08:00;55;70\n"
        "S1;20/11/2025 09:00;57;72\n",
    )
    adapter = make(noise_mapping())
    rows = run(adapter, path)
    assert [r for _, r in rows[2:4]] == ["invalid_timestamp", "invalid_timestamp"]
    first, second, last = rows[0][1], rows[1][1], rows[4][1]
    assert first["dateObservedFrom"] == second["dateObservedFrom"] == "2025-11-20T07:00:00Z"
    assert last["dateObservedFrom"] == "2025-11-20T08:00:00Z"
    first["dateObservedFrom"] = "changed"
    assert second["dateObservedFrom"] == "2025-11-20T07:00:00Z"
    assert run(adapter, path)[1][1]["dateObservedFrom"] == "2025-11-20T07:00:00Z"
