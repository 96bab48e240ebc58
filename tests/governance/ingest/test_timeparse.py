from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from governance.errors import ConfigurationError, InvalidRecordError
from governance.ingest.timeparse import parse_instant, utc_iso, zone

MADRID = zone("Europe/Madrid")


def test_offset_is_converted_to_utc() -> None:
    moment = parse_instant("2026-11-20T03:12:44+01:00", field="at", zone=None)
    assert moment == datetime(2026, 11, 20, 2, 12, 44, tzinfo=UTC)
    assert utc_iso(moment) == "2026-11-20T02:12:44Z"


def test_trailing_z_and_milliseconds() -> None:
    moment = parse_instant("2026-11-20T03:12:44.250Z", field="at", zone=None)
    assert utc_iso(moment) == "2026-11-20T03:12:44.250Z"


def test_local_time_needs_a_zone() -> None:
    with pytest.raises(InvalidRecordError) as err:
        parse_instant("2026-11-20T07:00:00", field="from", zone=None)
    assert err.value.reason == "timestamp_without_zone"
    assert "'from'" in err.value.detail


def test_local_time_in_configured_zone() -> None:
    # November: Madrid is UTC+1
    assert utc_iso(parse_instant("2026-11-20T07:00:00", field="from", zone=MADRID)) == "2026-11-20T06:00:00Z"
    # July: UTC+2
    assert utc_iso(parse_instant("2026-07-20T07:00:00", field="from", zone=MADRID)) == "2026-07-20T05:00:00Z"


def test_ambiguous_and_nonexistent_local_times_are_refused() -> None:
    with pytest.raises(InvalidRecordError) as err:
        parse_instant("2026-10-25T02:30:00", field="from", zone=MADRID)
    assert err.value.reason == "ambiguous_local_time"
    with pytest.raises(InvalidRecordError) as err:
        parse_instant("2026-03-29T02:30:00", field="from", zone=MADRID)
    assert err.value.reason == "nonexistent_local_time"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1763971200000, "2025-11-24T08:00:00Z"), (1763971200, "2025-11-24T08:00:00Z")],
)
def test_epoch_seconds_and_milliseconds(value: int, expected: str) -> None:
    assert utc_iso(parse_instant(value, field="ts", zone=None)) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [(True, "wrong_type"), ([1], "wrong_type"), ("yesterday", "invalid_timestamp"), (10**20, "invalid_timestamp")],
)
def test_garbage_is_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(InvalidRecordError) as err:
        parse_instant(value, field="ts", zone=None)
    assert err.value.reason == reason


def test_unknown_zone_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Mars/Olympus"):
        zone("Mars/Olympus")


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_outside_the_utc_range_are_record_errors(text: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        parse_instant(text, field="at", zone=None)
    assert caught.value.reason == "invalid_timestamp"
    assert "outside the years 1 to 9999" in caught.value.detail


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00", "9999-12-31T23:59:59"])
def test_local_times_outside_the_utc_range_are_record_errors(text: str) -> None:
    with pytest.raises(InvalidRecordError) as caught:
        parse_instant(text, field="from", zone=zone("America/New_York" if text.startswith("9") else "Asia/Tokyo"))
    assert caught.value.reason == "invalid_timestamp"


@given(st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)),
                                            timezone(timedelta(hours=-11, minutes=-30))]))
    .map(lambda d: d.isoformat(timespec=("seconds", "milliseconds", "microseconds")[d.microsecond % 3])),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda d: d.isoformat() + "Z"),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|z|[+-][0-9]{2}:?[0-9]{2})?\Z"),
    st.text(max_size=30),
))
def test_the_stores_observation_time_is_parse_instants(text: str) -> None:
    """``observed_at_of`` reads UTC text with ``datetime.fromisoformat`` directly: the same instant, in UTC,
    as ``parse_instant`` (or None where that refuses the text)."""
    from governance.ingest.pipeline import observed_at_of

    try:
        expected: datetime | None = parse_instant(text, field="dateObserved", zone=None)
    except Exception:
        expected = None
    got = observed_at_of({"dateObserved": text}, "dateObserved")
    assert got == expected
    if got is not None and expected is not None:
        assert got.tzinfo is UTC and expected.tzinfo is UTC and got.isoformat() == expected.isoformat()
