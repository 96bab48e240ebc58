"""Typed field access: values pass through, and every problem names the field with the same words."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest

from adapters.fields import number, require, string, unknown_keys
from governance.errors import InvalidRecordError


def _refusal(call: Any) -> tuple[str, str, str | None]:
    with pytest.raises(InvalidRecordError) as caught:
        call()
    return caught.value.reason, caught.value.detail, caught.value.field


class Level(enum.IntEnum):
    HIGH = 3


def test_require() -> None:
    assert require({"k": 0}, "k") == 0
    assert require({"k": False}, "k") is False
    for body in ({}, {"k": None}):
        assert _refusal(lambda b=body: require(b, "k", path="p.")) == (
            "missing_field", "required field 'p.k' is missing", "p.k")


def test_number() -> None:
    body = {"i": 3, "f": 0.5, "b": True, "s": "3", "nan": math.nan, "inf": math.inf, "none": None, "e": Level.HIGH}
    assert number(body, "i", minimum=0, maximum=3) == 3
    assert number(body, "f", minimum=0, maximum=1) == 0.5
    assert number(body, "e", maximum=3) == 3  # an int subclass other than bool is a number
    assert number(body, "none", required=False) is None
    assert number(body, "absent", required=False) is None
    assert _refusal(lambda: number(body, "absent", path="x.")) == (
        "missing_field", "required field 'x.absent' is missing", "x.absent")
    assert _refusal(lambda: number(body, "b")) == ("wrong_type", "field 'b' must be a number, got a boolean", "b")
    assert _refusal(lambda: number(body, "s")) == (
        "wrong_type", "field 's' must be a number, got the string '3'", "s")
    assert _refusal(lambda: number(body, "nan", path="x.")) == (
        "out_of_range", "field 'x.nan' is not a finite number", "x.nan")
    assert _refusal(lambda: number(body, "inf", maximum=10)) == (
        "out_of_range", "field 'inf' is not a finite number", "inf")
    assert _refusal(lambda: number(body, "i", minimum=4)) == ("out_of_range", "field 'i' is 3, outside [4, None]", "i")
    assert _refusal(lambda: number(body, "f", maximum=0.1)) == (
        "out_of_range", "field 'f' is 0.5, outside [None, 0.1]", "f")
    assert _refusal(lambda: number(body, "e", maximum=2)) == (
        "out_of_range", "field 'e' is <Level.HIGH: 3>, outside [None, 2]", "e")


def test_string() -> None:
    body = {"s": "on", "blank": "  ", "n": 1, "none": None}
    assert string(body, "s") == "on"
    assert string(body, "none", required=False) is None
    assert _refusal(lambda: string(body, "blank", path="p.")) == (
        "missing_field", "field 'p.blank' is empty", "p.blank")
    assert _refusal(lambda: string(body, "n")) == ("wrong_type", "field 'n' must be a string, got the number 1", "n")
    assert _refusal(lambda: string(body, "none")) == ("missing_field", "required field 'none' is missing", "none")


def test_unknown_keys() -> None:
    known = frozenset({"a", "b"})
    assert unknown_keys({"a": 1}, known) == ()
    assert unknown_keys({}, known) == ()
    assert unknown_keys({"a": 1, "z": 2, "y y": 3, "c": 4}, known, path="p.") == ("p.<unnamed key>", "p.c", "p.z")
