"""Timestamps in, UTC ISO 8601 out. A local time without an offset is accepted only with a zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from governance.errors import ConfigurationError, InvalidRecordError

#: Epoch values above this are taken as milliseconds (year 2286 in seconds).
_MS_THRESHOLD = 10_000_000_000


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


def localize(naive: datetime, tz: ZoneInfo, *, field: str, raw: str) -> datetime:
    """Attach ``tz`` to a wall-clock time, refusing times that DST makes ambiguous or impossible."""
    early = naive.replace(tzinfo=tz, fold=0)
    late = naive.replace(tzinfo=tz, fold=1)
    roundtrip = early.astimezone(UTC).astimezone(tz).replace(tzinfo=None)
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
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def is_far_future(moment: datetime, now: datetime, *, allowance: timedelta = timedelta(minutes=10)) -> bool:
    """True when a reading claims a time later than ``now`` plus a clock-skew allowance."""
    return moment > now + allowance
