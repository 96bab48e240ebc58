"""The hot-path validator of each schema (``EntitySchema._check``: our generated check, or where a schema
needs it the fallback ``compile_check``) gives the detailed validator's verdict on every value.

Both are compiled from the schema by code of ours (the generator of ``governance.schema_check``; for the
fallback, a transformed copy of the schema), so they are compared with ``fastjsonschema.compile``
of the schema as shipped: on every golden adapter output, and on a deterministic swarm of mutations of
them (dropped properties, values of every JSON kind, other geometries, unknown properties, non-objects).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from typing import Any

import fastjsonschema
import pytest

from governance.catalog import SchemaCatalog, compile_check, condition, default_catalog, exclusive
from governance.errors import InvalidRecordError
from tests.adapters.make_golden import adapter_names, read_golden
from tests.governance.schema_support import verdict

VALUES: list[Any] = [
    None, 0, -1, 1, 1.5, -0.5, 250, 251, 10080, 2**63, True, False, "", " ", "x", "5K", "MIN", "heartRate",
    "inactivity", "doorOpen", "sosButton", "on", "ok", "urn:ngsi-ld:Person:p-1", "urn:ngsi-ld:Device:d 1",
    "2026-11-20T06:00:00Z", "2026-11-20T06:00:00", "2026-11-20", "2026-11-20T06:00:00+01:00/2026-11-20T07:00:00Z",
    "http://example.org/x", [], [1], ["a"], [[1, 2]], {}, {"a": 1},
    {"type": "Point", "coordinates": [-3.7, 40.4]},
    {"type": "Point", "coordinates": [-3.7, 40.4, 650]},
    {"type": "Point", "coordinates": [-3.7]},
    {"type": "Point"},
    {"type": "Point", "coordinates": [-3.7, 40.4], "bbox": [0, 0, 1, 1]},
    {"type": "LineString", "coordinates": [[0, 0], [1, 1]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
    {"type": "MultiPoint", "coordinates": [[0, 0]]},
    {"type": "Feature", "coordinates": [0, 0]},
]


def _golden_entities() -> list[dict[str, Any]]:
    found = []
    for name in adapter_names():
        for row in read_golden(name):
            found.extend(row.get("entities", []))
    return found


def _mutations(entity: dict[str, Any], names: list[str], rng: random.Random, count: int) -> list[Any]:
    out: list[Any] = [entity, 1, "x", None, [entity]]
    for _ in range(count):
        changed = copy.deepcopy(entity)
        for _ in range(rng.choice((1, 1, 2, 3))):
            name = rng.choice(names)
            roll = rng.random()
            if roll < 0.2:
                changed.pop(name, None)
            elif roll < 0.95:
                changed[name] = copy.deepcopy(rng.choice(VALUES))
            else:
                changed["notInTheSchema"] = 1
        out.append(changed)
    return out


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return default_catalog()


def test_every_shipped_schema_has_a_check(catalog: SchemaCatalog) -> None:
    assert all(catalog.get(t)._check is not None for t in catalog.types())


def test_same_verdict_as_the_detailed_validator(catalog: SchemaCatalog) -> None:
    rng = random.Random(20261124)
    entities = _golden_entities()
    assert {e["type"] for e in entities} == set(catalog.types())
    detailed = {
        t: fastjsonschema.compile(dict(catalog.get(t).document), formats={"date-time": _date_time_format()})
        for t in catalog.types()
    }
    compared = disagreements = 0
    for entity in entities:
        schema = catalog.get(entity["type"])
        assert schema._check is not None
        names = sorted({*entity, *schema.document.get("properties", {})})
        for value in _mutations(entity, names, rng, 150):
            compared += 1
            if verdict(detailed[entity["type"]], value) != verdict(schema._check, value):
                disagreements += 1
    assert compared > 10_000
    assert disagreements == 0


def test_invalid_entities_still_get_the_detailed_reason(catalog: SchemaCatalog) -> None:
    alert = next(e for e in _golden_entities() if e["type"] == "Alert")
    with pytest.raises(InvalidRecordError) as caught:
        catalog.get("Alert").validate({**alert, "severity": "apocalyptic"})
    assert caught.value.reason == "schema_violation"
    assert caught.value.field == "severity"
    assert "must be one of" in caught.value.detail


def test_exclusive_branches() -> None:
    point = {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["Point"]}}}
    line = {"type": "object", "required": ["type"], "properties": {"type": {"const": "LineString"}}}
    either = {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["Point", "LineString"]}}}
    optional = {"type": "object", "properties": {"type": {"enum": ["Polygon"]}}}
    untyped = {"required": ["type"], "properties": {"type": {"enum": ["Polygon"]}}}
    assert exclusive([point, line])
    assert exclusive([{"type": "array"}, {"type": "string"}])
    assert not exclusive([point, either])  # both allow "Point"
    assert not exclusive([point, optional])  # {} matches the second: "type" is not required there
    assert not exclusive([point, untyped])  # a string matches the second: required applies to objects only
    assert not exclusive([{"type": "integer"}, {"type": "number"}])
    # number ranges are never taken as exclusive: NaN passes both minimum/maximum checks
    assert not exclusive([{"type": "number", "maximum": 1, "minimum": 0}, {"type": "number", "maximum": -1}])


@pytest.mark.parametrize("schema", [
    {"required": ["a", "b"]},
    {"properties": {"a": {"const": "x"}}},
    {"properties": {"a": {"enum": ["x", "y{}"]}}, "required": ["a"]},
    {},
])
def test_conditions_agree_with_the_schema(schema: dict[str, Any]) -> None:
    test = condition(schema)
    assert test is not None
    holds = eval(f"lambda data: {test.format(variable='data')}")  # our own generated expression
    validate = fastjsonschema.compile({"$schema": "http://json-schema.org/draft-07/schema#", **schema})
    values: list[Any] = [None, 1, "x", [], {}, {"a": "x"}, {"a": "y{}"}, {"a": "z"}, {"a": 1}, {"b": 1},
                         {"a": "x", "b": None}, {"a": ["x"]}]
    for value in values:
        assert holds(value) == verdict(validate, value), value


def test_conditions_only_for_simple_schemas() -> None:
    assert condition({"properties": {"a": {"type": "string"}}}) is None
    assert condition({"properties": {"a": {"const": 1}}}) is None
    assert condition({"required": ["a"], "type": "object"}) is None
    assert condition(True) is None


def test_other_drafts_get_no_check() -> None:
    assert compile_check({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}) is None


def _date_time_format() -> Callable[[str], bool]:
    from governance.catalog import _FORMATS

    return _FORMATS["date-time"]
