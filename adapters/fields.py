"""Typed field access for adapters: every problem becomes an ``InvalidRecordError`` naming the field."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from governance.errors import InvalidRecordError

_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


def describe(value: Any) -> str:
    """A short, safe description of a value for error messages (never the whole value)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}" + ("…" if len(value) > 40 else "")
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def decode_json_object(payload: bytes) -> dict[str, Any]:
    """Decode a payload that must be one JSON object."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidRecordError(
                "not_utf8", f"payload is not UTF-8 (first bad byte at offset {uexc.start})"
            ) from None
        raise InvalidRecordError("invalid_json", f"payload is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidRecordError("invalid_json", f"payload must be a JSON object, got {describe(value)}")
    return value


def decode_text(payload: bytes) -> str:
    """Decode a text payload that must be UTF-8."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRecordError(
            "not_utf8", f"payload is not UTF-8 (first bad byte at offset {exc.start})"
        ) from None


def require(obj: dict[str, Any], key: str, *, path: str = "") -> Any:
    """The value of a required field (null counts as missing)."""
    value = obj.get(key)
    if value is None:
        name = f"{path}{key}"
        raise InvalidRecordError("missing_field", f"required field '{name}' is missing", field=name)
    return value


def number(
    obj: dict[str, Any],
    key: str,
    *,
    path: str = "",
    required: bool = True,
    minimum: float | None = None,
    maximum: float | None = None,
) -> float | int | None:
    """A numeric field (booleans and numeric strings are refused: numbers must be numbers)."""
    value: float | int | None = obj.get(key)
    if value is None:
        if not required:
            return None
        value = require(obj, key, path=path)  # raises
    kind = value.__class__
    if kind is not int and kind is not float:  # the usual types first; then what else passes
        if isinstance(value, bool) or not isinstance(value, int | float):
            name = f"{path}{key}"
            raise InvalidRecordError(
                "wrong_type", f"field '{name}' must be a number, got {describe(value)}", field=name
            )
        return check_range(value, f"{path}{key}", minimum=minimum, maximum=maximum)
    if (
        (kind is float and not math.isfinite(value))
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        return check_range(value, f"{path}{key}", minimum=minimum, maximum=maximum)  # raises
    return value


def check_range(
    value: float | int, name: str, *, minimum: float | None = None, maximum: float | None = None
) -> float | int:
    """Refuse NaN, infinities and values outside the physically possible range."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRecordError("out_of_range", f"field '{name}' is not a finite number", field=name)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidRecordError(
            "out_of_range",
            f"field '{name}' is {value!r}, outside [{minimum}, {maximum}]",
            field=name,
        )
    return value


def string(obj: dict[str, Any], key: str, *, path: str = "", required: bool = True) -> str | None:
    """A non-empty string field."""
    value = obj.get(key)
    if value is None:
        if not required:
            return None
        value = require(obj, key, path=path)  # raises
    if not isinstance(value, str):
        name = f"{path}{key}"
        raise InvalidRecordError(
            "wrong_type", f"field '{name}' must be a string, got {describe(value)}", field=name
        )
    if not value.strip():
        name = f"{path}{key}"
        raise InvalidRecordError("missing_field", f"field '{name}' is empty", field=name)
    return value


def obj_field(obj: dict[str, Any], key: str, *, path: str = "") -> dict[str, Any]:
    """A required nested object."""
    value = require(obj, key, path=path)
    if not isinstance(value, dict):
        name = f"{path}{key}"
        raise InvalidRecordError(
            "wrong_type", f"field '{name}' must be an object, got {describe(value)}", field=name
        )
    return value


def list_field(obj: dict[str, Any], key: str, *, path: str = "") -> list[Any]:
    """A required array."""
    value = require(obj, key, path=path)
    if not isinstance(value, list):
        name = f"{path}{key}"
        raise InvalidRecordError(
            "wrong_type", f"field '{name}' must be an array, got {describe(value)}", field=name
        )
    return value


#: A local id that is safe inside an NGSI-LD URN and matches the official id pattern.
LOCAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,63}")


def local_id(obj: dict[str, Any], key: str, *, path: str = "", echo: bool = True) -> str:
    """An identifier usable inside an entity id (letters, digits, ``_ . -``).

    ``echo=False`` keeps the value out of the error (identifiers of people), and out of the table of
    identifiers already checked: devices and stations are remembered, people are not.
    """
    value = obj.get(key)
    if value.__class__ is str and value in _CHECKED_IDS:
        return value
    value = string(obj, key, path=path)
    assert value is not None
    if not LOCAL_ID.fullmatch(value):
        got = f" (got {describe(value)})" if echo else ""
        raise InvalidRecordError(
            "invalid_id",
            f"'{path}{key}' must be 1-100 letters, digits, '_', '.' or '-'{got}",
            field=f"{path}{key}",
        )
    if echo:
        if len(_CHECKED_IDS) >= CHECKED_IDS_KEPT:
            _CHECKED_IDS.clear()
        _CHECKED_IDS.add(value)
    return value


#: Identifiers of things (not people) that passed :func:`local_id`; emptied when full.
_CHECKED_IDS: set[str] = set()
CHECKED_IDS_KEPT = 65_536


def unknown_keys(obj: dict[str, Any], known: frozenset[str], *, path: str = "") -> tuple[str, ...]:
    """Names of the keys of ``obj`` outside ``known``; a key that does not look like a name is not echoed."""
    if known.issuperset(obj):
        return ()  # the usual case: nothing to report
    names = {
        f"{path}{key}" if _FIELD_NAME.fullmatch(key) else f"{path}<unnamed key>"
        for key in obj
        if key not in known
    }
    return tuple(sorted(names))
