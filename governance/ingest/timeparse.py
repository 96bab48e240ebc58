"""Timestamps in, UTC ISO 8601 out. A local time without an offset is accepted only with a zone.

The hot path (every record has one or more timestamps): a UTC text as devices and servers write it
(``2026-01-04T23:30:43.839Z``) is read directly; the wall-clock times of a zone, whose conversion is
costly and which come again and again (the interval every traffic counter reports), are memoized; so
are the last two UTC instants formatted (an interval's bounds, an uplink's time written twice). Only
successful results are kept, in a bounded table that is emptied when full: unique times are not worth one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from governance.errors import ConfigurationError, InvalidRecordError

#: Epoch values above this are taken as milliseconds (year 2286 in seconds).
_MS_THRESHOLD = 10_000_000_000

#: How many local times are kept (the table is emptied when it is full).
CACHE_SIZE = 16_384

#: ``(text, zone)`` → the UTC instant a text read in a configured zone denotes.
_LOCAL_TIMES: dict[tuple[str, ZoneInfo], datetime] = {}

#: A UTC timestamp in the plain form devices and servers write, ``2026-01-04T23:30:43[.fraction]Z`` (ASCII
#: digits only; up to nanoseconds, of which Python keeps the microseconds, cutting the rest).
UTC_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")


def zone(name: str) -> ZoneInfo:
    """An IANA time zone, or a ``ConfigurationError`` naming the bad value."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigurationError(f"unknown time zone {name!r}") from exc


def parse_instant(value: Any, *, field: str, zone: ZoneInfo | None) -> datetime:
    """Parse an ISO 8601 string or an epoch number (s or ms) into an aware UTC datetime.

    A string without an offset is interpreted in ``zone``; with no zone configured it is refused
    rather than guessed. Ambiguous or non-existent local times (DST changes) are refused too.
    """
    if value.__class__ is str:
        if value[-1:] == "Z" and UTC_TEXT.fullmatch(value):
            # "2026-01-04T23:30:43.839Z": Python reads the "Z" itself (and cuts nanoseconds as the general
            # path does), and the instant is already in UTC. A month 13 falls through to the general path.
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        elif zone is not None:
            key = (value, zone)
            known = _LOCAL_TIMES.get(key)
            if known is not None:
                return known
            moment = _parse_text(value, field=field, zone=zone)
            if len(_LOCAL_TIMES) >= CACHE_SIZE:
                _LOCAL_TIMES.clear()
            _LOCAL_TIMES[key] = moment
            return moment
        return _parse_text(value, field=field, zone=zone)
    if isinstance(value, bool):
        raise InvalidRecordError("wrong_type", f"'{field}' must be a timestamp, got a boolean", field=field)
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > _MS_THRESHOLD else value
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
    return _parse_text(value, field=field, zone=zone)  # a subclass of str


def _parse_text(value: str, *, field: str, zone: ZoneInfo | None) -> datetime:
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
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # "0001-01-01T00:00:00+01:00": the UTC instant is before year 1
        raise _out_of_range(field, value) from exc


def _out_of_range(field: str, value: str) -> InvalidRecordError:
    return InvalidRecordError(
        "invalid_timestamp", f"'{field}' {value[:64]!r} is outside the years 1 to 9999 in UTC", field=field
    )


def localize(naive: datetime, tz: ZoneInfo, *, field: str, raw: str) -> datetime:
    """Attach ``tz`` to a wall-clock time, refusing times that DST makes ambiguous or impossible."""
    early = naive.replace(tzinfo=tz, fold=0)
    late = naive.replace(tzinfo=tz, fold=1)
    try:
        roundtrip = early.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    except OverflowError as exc:
        raise _out_of_range(field, raw) from exc
    if roundtrip != naive:
        raise InvalidRecordError(
            "nonexistent_local_time",
            f"'{field}' {raw!r} does not exist in {tz.key} (clocks go forward at that hour)",
            field=field,
        )
    if early.utcoffset() != late.utcoffset():
        raise InvalidRecordError(
            "ambiguous_local_time",
            f"'{field}' {raw!r} is ambiguous in {tz.key} (clocks go back at that hour)",
            field=field,
        )
    return early.astimezone(UTC)


def utc_iso(moment: datetime) -> str:
    """Format as UTC ISO 8601 with a ``Z``: seconds, or milliseconds when there is a fraction."""
    global _LAST, _BEFORE_LAST
    if moment.tzinfo is not UTC:
        # Only UTC instants are remembered: datetimes of one zone compare by wall clock, so the two
        # 02:30 of a night when clocks go back would be equal; naive ones depend on the machine's zone.
        return _utc_iso(moment)
    last = _LAST
    if last[0] == moment:
        return last[1]
    before = _BEFORE_LAST
    if before[0] == moment:
        _BEFORE_LAST, _LAST = last, before
        return before[1]
    text = _utc_iso(moment)
    _BEFORE_LAST, _LAST = last, (moment, text)  # (each a whole pair: threads never see half of one)
    return text


def _utc_iso(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    if moment.year < 1000:  # strftime writes such years unpadded
        return utc_iso_reference(moment)
    fraction = moment.microsecond
    if fraction:
        return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (  # noqa: UP031 (the quickest way to write it)
            moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, fraction // 1000
        )
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (  # noqa: UP031
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second
    )


def utc_iso_reference(moment: datetime) -> str:
    """:func:`utc_iso` the plain way, with ``strftime`` (which writes years before 1000 unpadded)."""
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


#: The last two instants :func:`utc_iso` wrote, with their text: the bounds of the interval consecutive
#: messages share, the time an uplink's entities all carry.
_NOTHING_YET = (datetime.min.replace(tzinfo=UTC), utc_iso_reference(datetime.min.replace(tzinfo=UTC)))
_LAST = _BEFORE_LAST = _NOTHING_YET


def clear_caches() -> None:
    """Forget every memoized timestamp (tests; nothing else needs it)."""
    global _LAST, _BEFORE_LAST
    _LOCAL_TIMES.clear()
    _LAST = _BEFORE_LAST = _NOTHING_YET


def is_far_future(moment: datetime, now: datetime, *, allowance: timedelta = timedelta(minutes=10)) -> bool:
    """True when a reading claims a time later than ``now`` plus a clock-skew allowance."""
    return moment > now + allowance
