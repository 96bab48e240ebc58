"""RFC 8785 (JSON Canonicalization Scheme) bytes for audit entries, and the log's time format.

``rfc8785`` is the reference encoder but costs ~30 µs per entry. For the values audit entries hold
(ASCII object keys, integers within ±(2**53-1), strings, booleans, null — no floats) orjson with sorted
keys writes exactly the same bytes: member order by UTF-16 code units equals byte order for ASCII keys,
and orjson escapes strings exactly as RFC 8785 does (tested over every code point). Anything outside that
profile goes through ``rfc8785`` itself, so the output is canonical either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import rfc8785

from governance.audit.errors import InvalidAuditEventError

MAX_SAFE_INTEGER = 2**53 - 1


def canonical_bytes(value: Any) -> bytes:
    """The RFC 8785 encoding of ``value`` (a JSON object, array or scalar)."""
    if _fast_profile(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidAuditEventError(f"not representable as canonical JSON: {exc}") from exc


def canonical_entry_bytes(entry: dict[str, Any]) -> bytes:
    """:func:`canonical_bytes` for an entry built by ``entries.build_entry``.

    Its fixed fields are ASCII-keyed strings, lists of strings, null and small integers by construction
    (``AuditEvent.check``), so only ``refs`` needs the profile walk.
    """
    if _fast_profile(entry["refs"]):
        return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS)
    return canonical_bytes(entry)


def is_canonical(data: bytes) -> bool:
    """True when ``data`` is the RFC 8785 encoding of the JSON value it holds."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    if orjson.dumps(value, option=orjson.OPT_SORT_KEYS) == data and _fast_profile(value):
        return True
    try:
        return rfc8785.dumps(value) == data
    except (rfc8785.CanonicalizationError, TypeError, ValueError):
        return False


def _fast_profile(value: Any) -> bool:
    """Whether orjson's sorted output is guaranteed to equal RFC 8785 for ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if kind is dict:
            for key, inner in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(inner)
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False
    return True


def format_time(moment: datetime) -> str:
    """An aware datetime as the log writes it: ``2026-11-20T12:00:00.000000Z``.

    UTC, microseconds, ``Z``: fixed width, so comparing the text compares the times.
    """
    if moment.tzinfo is None:
        raise InvalidAuditEventError("audit times must be timezone-aware")
    m = moment.astimezone(UTC)
    return (f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
            f".{m.microsecond:06d}Z")


def parse_time(text: str) -> datetime:
    """Read a time written by :func:`format_time` (or any RFC 3339 time with a zone)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return moment.astimezone(UTC)
