"""Mondrian k-anonymity: every released class has k records, leftovers are suppressed and counted, utility holds."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.anonymize.errors import AnonymizationError, NotKAnonymousError
from governance.anonymize.kanon import Kind, equivalence_classes, mondrian, verify_k_anonymous

points = st.builds(lambda lon, lat: {"type": "Point", "coordinates": [lon, lat]},
                   st.floats(2.0, 2.3, allow_nan=False), st.floats(41.2, 41.5, allow_nan=False))
instants = st.builds(lambda d, h: f"2026-11-{d:02d}T{h:02d}:00:00Z", st.integers(1, 28), st.integers(0, 23))
records = st.lists(
    st.fixed_dictionaries({
        "age": st.one_of(st.none(), st.integers(0, 110)),
        "location": points,
        "when": instants,
        "sex": st.sampled_from(["f", "m", "x"]),
        "secret": st.text(max_size=5),
    }),
    max_size=120,
)


@settings(max_examples=60, deadline=None, database=None)
@given(records, st.integers(2, 12), st.sampled_from([("age",), ("location", "when"), ("age", "sex", "location")]))
def test_every_released_class_has_at_least_k_records(rows: list[dict[str, Any]], k: int, qis: tuple[str, ...]) -> None:
    result = mondrian(rows, qis, k)
    assert len(result.records) + result.suppressed == len(rows)
    assert all(size >= k for size in equivalence_classes(result.records, qis).values())
    # only quasi-identifiers change: the rest of each record is released as it was
    for index, released in zip(result.kept, result.records, strict=True):
        assert {k_: v for k_, v in released.items() if k_ not in qis} == \
            {k_: v for k_, v in rows[index].items() if k_ not in qis}
    if len(rows) < k:
        assert result.records == [] and result.suppressed == len(rows)


@settings(max_examples=40, deadline=None, database=None)
@given(records, st.integers(2, 8))
def test_generalized_values_cover_the_originals(rows: list[dict[str, Any]], k: int) -> None:
    result = mondrian(rows, ("age", "location", "when"), k)
    for index, released in zip(result.kept, result.records, strict=True):
        original = rows[index]
        age = released.get("age")
        if isinstance(age, dict):
            assert age["min"] <= original["age"] <= age["max"]
        else:
            assert age == original.get("age")
        lon, lat = original["location"]["coordinates"]
        place = released["location"]
        if place["type"] == "Polygon":
            xs = [c[0] for c in place["coordinates"][0]]
            ys = [c[1] for c in place["coordinates"][0]]
            assert min(xs) <= lon <= max(xs) and min(ys) <= lat <= max(ys)
        else:
            assert place["coordinates"] == [lon, lat]
        if "/" in released["when"]:
            start, end = released["when"].split("/")
            assert start <= original["when"] <= end
        else:
            assert released["when"] == original["when"]


def spread(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [{"age": rnd.randint(18, 95), "location": {"type": "Point", "coordinates": [rnd.uniform(2.05, 2.25),
                                                                                       rnd.uniform(41.3, 41.45)]},
             "dateIssued": f"2026-11-{rnd.randint(1, 28):02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"}
            for _ in range(n)]


def test_a_spread_dataset_keeps_its_detail() -> None:
    rows = spread(2000)
    result = mondrian(rows, ("age", "location", "dateIssued"), 10)
    assert result.suppressed == 0
    # strict Mondrian on distinct values stops only below 2k: many small classes, not one big one
    assert result.classes >= len(rows) // 20
    assert result.average_class_size < 20
    assert result.kinds == {"age": Kind.NUMBER, "location": Kind.POINT, "dateIssued": Kind.TIME}


def test_fewer_records_than_k_are_all_suppressed_and_counted() -> None:
    result = mondrian(spread(9), ("age",), 10)
    assert result.records == [] and result.suppressed == 9 and result.classes == 0


def test_records_missing_a_quasi_identifier_are_classes_of_their_own_or_suppressed() -> None:
    rows = spread(40)
    for row in rows[:3]:
        del row["age"]  # three records without an age: too few to form a class of 5
    result = mondrian(rows, ("age", "location"), 5)
    assert result.suppressed == 3
    assert sorted(set(range(40)) - set(result.kept)) == [0, 1, 2]
    for row in rows[3:8]:
        row["age"] = None  # now eight without an age: a class (or two) of their own
    result = mondrian(rows, ("age", "location"), 5)
    assert result.suppressed == 0
    assert all(r.get("age") is None for i, r in zip(result.kept, result.records, strict=True) if i < 8)


def test_categories_generalize_to_sets_or_a_star() -> None:
    rows = [{"sex": s, "age": a} for s, a in [("f", 30)] * 4 + [("m", 30)] * 4 + [("x", 31)] * 2]
    result = mondrian(rows, ("sex",), 4)
    values = Counter(orjson_key(r["sex"]) for r in result.records)
    # "x" alone is too small; it is merged into a set with another value, never released alone
    assert "x" not in values
    assert all(size >= 4 for size in values.values())
    everything = mondrian(rows, ("sex",), 6)
    assert {str(r["sex"]) for r in everything.records} <= {"*", "['f', 'm', 'x']", "['f', 'x']", "['m', 'x']"}
    assert all(size >= 6 for size in equivalence_classes(everything.records, ("sex",)).values())


def orjson_key(value: Any) -> str:
    return value if isinstance(value, str) else ",".join(value)


def test_verification_refuses_a_table_that_is_not_k_anonymous() -> None:
    table = [{"zip": "08001"}] * 5 + [{"zip": "08002"}]
    with pytest.raises(NotKAnonymousError, match="1 of 2 equivalence classes"):
        verify_k_anonymous(table, ("zip",), 2)
    verify_k_anonymous(table[:5], ("zip",), 5)
    with pytest.raises(NotKAnonymousError):
        verify_k_anonymous(table, (), 2)


def test_ugly_values_never_break_the_guarantee() -> None:
    rows: list[dict[str, Any]] = [
        {"q": float("nan")}, {"q": float("inf")}, {"q": True}, {"q": "2026-13-45T99:00:00Z"}, {"q": [1, 2]},
        {"q": {"type": "Point", "coordinates": [500, 500]}}, {"q": "x" * 10_000}, {"q": None}, {}, {"q": 1},
    ] * 3
    result = mondrian(rows, ("q",), 3)
    assert result.kinds["q"] is Kind.CATEGORY
    assert all(size >= 3 for size in equivalence_classes(result.records, ("q",)).values())


@pytest.mark.parametrize(("qis", "k"), [((), 2), (("a",), 0), (("a",), True)])
def test_bad_parameters_are_refused(qis: tuple[str, ...], k: Any) -> None:
    with pytest.raises(AnonymizationError):
        mondrian([{"a": 1}], qis, k)
