"""Our generated verdict-only check (``governance.schema_check``) gives fastjsonschema's verdict.

The reference is ``fastjsonschema.compile`` of the schema as shipped (the detailed validator that also
writes the error messages). Compared, with hypothesis:

- for every schema in ``schemas/``: the golden adapter outputs and the official Smart Data Model
  examples, and mutations of them (keys dropped, values swapped for other JSON kinds — a bool or a
  float for an integer, a string for a number, ``None``, lists, objects — numbers out of range, wrong
  enumeration values, broken date-times, unknown keys, at any depth);
- for small schemas exercising every keyword the generator implements, including the ones our schemas
  do not use yet, on arbitrary JSON values.

It also checks that every shipped schema is handled by the generator (no silent fallback to
fastjsonschema's code) and that anything the generator does not implement makes it refuse.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.catalog import _FORMATS, compile_check, default_catalog, hot_path_check
from governance.errors import InvalidRecordError
from governance.resources import data_folder
from governance.schema_check import DRAFT_07, UnsupportedSchemaError, generate_check
from tests.adapters.make_golden import adapter_names, read_golden
from tests.governance.schema_support import verdict
from tests.smart_data_models import MODEL_DIRS, official_example

SCHEMA_FILES = sorted(data_folder("schemas").glob("*.schema.json"))
TYPES = [path.name.removesuffix(".schema.json") for path in SCHEMA_FILES]

#: Values that sit on the edges of our schemas' keywords.
EDGES: list[Any] = [
    None, True, False, 0, 1, -1, 0.0, 1.0, 1.5, -0.5, 2.0, 90, 90.5, -90.5, 180, 180.0001, -181, 255, 256, 1e9,
    -1e9, 2**63, math.nan, math.inf, -math.inf, "", " ", "x", "5K", "MIN", "on", "ok", "heartRate", "Point",
    "urn:ngsi-ld:Device:d-1", "urn:ngsi-ld:Device:d 1", "http://example.org/x", "not a uri", "a" * 257,
    "2026-11-20T06:00:00Z", "2026-11-20T06:00:00.123+01:00", "2026-11-20T06:00:00", "2026-11-20",
    "2026-02-30T06:00:00Z", "2026-11-20 06:00:00Z", "2026-11-20T25:00:00Z",
    "2026-11-20T06:00:00Z/2026-11-20T07:00:00Z", "1", "1.5", "true", [], [1], [1, 2], [True, False], ["a"],
    ["a", "a"], [[1, 2]], [[0, 0], [1, 1]], [-3.7, 40.4], [-3.7, 40.4, 650], [-3.7, 40.4, True], [200, 0],
    [1, 2, 3, 4], {}, {"a": 1}, {"type": "Point", "coordinates": [-3.7, 40.4]},
    {"type": "Point", "coordinates": [-3.7, 40.4], "bbox": [0, 0, 1, 1]}, {"type": "Point"},
    {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, {"type": "LineString", "coordinates": [[0, 0]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, {"type": "Feature"},
    {"type": ["Point"], "coordinates": [0, 0]},
]


@cache
def _document(entity_type: str) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(data_folder("schemas").joinpath(f"{entity_type}.schema.json").read_bytes())
    return document


@cache
def _validators(entity_type: str) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(the detailed fastjsonschema validator, our generated check) of one shipped schema."""
    document = _document(entity_type)
    return fastjsonschema.compile(copy.deepcopy(document), formats=_FORMATS), generate_check(document, _FORMATS)


@cache
def _seeds() -> dict[str, list[dict[str, Any]]]:
    """Valid entities of every type: golden adapter outputs and official examples."""
    found: dict[str, list[dict[str, Any]]] = {t: [] for t in TYPES}
    for name in adapter_names():
        for row in read_golden(name):
            for entity in row.get("entities", []):
                found[entity["type"]].append(entity)
    for entity_type in MODEL_DIRS:
        found[entity_type].append(official_example(entity_type))
    return found


@cache
def _valid_values(entity_type: str) -> dict[str, list[Any]]:
    """Per property, the values the seeds of ``entity_type`` hold: valid alone, maybe not together."""
    found: dict[str, list[Any]] = {}
    for entity in _seeds()[entity_type]:
        for name, value in entity.items():
            found.setdefault(name, []).append(value)
    return found


@cache
def _borrowed() -> list[Any]:
    """Property values of every seed: realistic values to put where they do not belong."""
    values: list[Any] = []
    for entities in _seeds().values():
        for entity in entities:
            values.extend(v for k, v in entity.items() if k not in ("id", "type"))
    return values


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
#: One value of every JSON kind (and a bool, a float, a string where a number belongs).
KINDS: list[Any] = [None, True, False, 0, 7, -1, 1.5, 1e300, "", "7", "x", [], [7], {}, {"a": 7}]
replacements = st.one_of(
    st.sampled_from(KINDS), st.sampled_from(EDGES), json_values, st.deferred(lambda: st.sampled_from(_borrowed()))
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside ``value`` (keys of objects, indexes of arrays), the value itself first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def _mutate(value: Any, path: tuple[Any, ...], action: str, replacement: Any) -> Any:
    """``value`` with one change at ``path``: the item there dropped or replaced, or an unknown key added
    to the object there."""
    if not path:
        if action == "extra" and isinstance(value, dict):
            return {**value, "notInTheSchema": replacement}
        return replacement if action == "replace" else value
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        copied = dict(value)
        if not rest and action == "drop":
            copied.pop(head, None)
        else:
            copied[head] = _mutate(value[head], rest, action, replacement)
        return copied
    copied_list = list(value)
    if not rest and action == "drop":
        del copied_list[head]
    else:
        copied_list[head] = _mutate(value[head], rest, action, replacement)
    return copied_list


@st.composite
def mutated_entities(draw: st.DrawFn, entity_type: str) -> Any:
    entity = copy.deepcopy(draw(st.sampled_from(_seeds()[entity_type])))
    names = sorted(_document(entity_type).get("properties", {}))
    valid = _valid_values(entity_type)
    for _ in range(draw(st.integers(0, 4))):
        roll = draw(st.integers(0, 4))
        if roll in (0, 4) and isinstance(entity, dict):
            # a value another seed holds for that property (combinations the schema may forbid)
            name = draw(st.sampled_from(sorted(valid)))
            entity = {**entity, name: draw(st.sampled_from(valid[name]))}
            continue
        if roll == 1 and isinstance(entity, dict):
            # a property of the schema, present or not, gets any value
            entity = {**entity, draw(st.sampled_from(names)): draw(replacements)}
            continue
        path = draw(st.sampled_from(_paths(entity)))
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "extra"]))
        entity = _mutate(entity, path, action, draw(replacements))
    return entity


# --------------------------------------------------------------------------------------------------
# Our schemas
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_shipped_schema_is_generated(path: Path) -> None:
    document = orjson.loads(path.read_bytes())
    generate_check(document, _FORMATS)  # no UnsupportedSchemaError
    check = default_catalog().get(document["title"])._check
    assert check is not None
    assert check.__code__.co_filename.startswith("<schema check"), "fell back to fastjsonschema's code"


def test_every_type_has_seeds() -> None:
    assert all(_seeds()[t] for t in TYPES)


@pytest.mark.parametrize("entity_type", TYPES)
def test_seeds_are_valid(entity_type: str) -> None:
    detailed, generated = _validators(entity_type)
    for entity in _seeds()[entity_type]:
        assert verdict(generated, entity) == verdict(detailed, entity)
    golden = [e for e in _seeds()[entity_type] if e.get("id", "").startswith("urn:")]
    assert all(verdict(generated, e) for e in golden)


@pytest.mark.parametrize("entity_type", TYPES)
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_same_verdict_on_mutated_entities(entity_type: str, data: st.DataObject) -> None:
    value = data.draw(mutated_entities(entity_type))
    detailed, generated = _validators(entity_type)
    assert verdict(generated, value) == verdict(detailed, copy.deepcopy(value)), value


@pytest.mark.parametrize("entity_type", TYPES)
def test_same_verdict_on_edge_values_of_every_property(entity_type: str) -> None:
    """Every property of every seed, and every property of the schema, set to every edge value."""
    detailed, generated = _validators(entity_type)
    fallback = compile_check(_document(entity_type))  # fastjsonschema's verdict-only code, still the fallback
    assert fallback is not None
    names = sorted(_document(entity_type).get("properties", {}))
    entity = _seeds()[entity_type][0]
    compared = 0
    for name in names:
        for value in EDGES:
            changed = {**entity, name: value}
            expected = verdict(detailed, changed)
            assert verdict(generated, changed) == expected, (name, value)
            assert verdict(fallback, changed) == expected, (name, value)
            compared += 1
    for value in EDGES:  # not an entity at all
        assert verdict(generated, value) == verdict(detailed, value) == verdict(fallback, value), value
    assert compared > 100


def test_invalid_entities_keep_the_detailed_reason() -> None:
    alert = _seeds()["Alert"][0]
    schema = default_catalog().get("Alert")
    schema.validate(alert)
    for changed, field in [({**alert, "severity": "apocalyptic"}, "severity"), ({**alert, "extra": 1}, None)]:
        with pytest.raises(InvalidRecordError) as caught:
            schema.validate(changed)
        assert caught.value.reason == "schema_violation"
        assert caught.value.field == field


# --------------------------------------------------------------------------------------------------
# Every supported keyword, on arbitrary values
# --------------------------------------------------------------------------------------------------

KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    {"type": "integer"},
    {"type": "number"},
    {"type": "boolean"},
    {"type": "null"},
    {"type": "array"},
    {"type": "object"},
    {"type": "string"},
    {"type": ["integer", "string"]},
    {"type": ["number", "null"]},
    {"type": ["boolean", "integer"]},
    {"type": ["array", "object"]},
    {"enum": ["a", "b"]},
    {"type": "string", "enum": ["a", "b"]},
    {"enum": [1, 2.5, True, None, "1", [1, "a"], {"a": 1}, []]},
    {"enum": []},
    {"const": 1},
    {"const": False},
    {"const": {"a": [1, None]}},
    {"const": "a"},
    {"items": {"enum": [1, "a", None, [1]]}},
    {"type": "array", "items": {"type": "object", "additionalProperties": {"enum": [1, "a"]},
                                "properties": {f"p{i}": {"type": ["integer", "null"]} for i in range(8)}}},
    {"items": {"oneOf": [{"type": "integer"}, {"minimum": 2}]}},
    {"properties": {"a": {"if": {"type": "string"}, "then": {"minLength": 2}, "else": {"type": "integer"}}}},
    {"type": "object", "allOf": [{"properties": {"a": {"type": "number", "exclusiveMinimum": 0}}, "required": ["a"]}]},
    {"type": "array", "minItems": 1, "items": [{"type": "integer"}, {"type": "string"}]},
    {"type": "number", "allOf": [{"type": "integer"}], "anyOf": [{"type": ["integer", "string"]}]},
    {"type": "integer", "allOf": [{"type": "number", "maximum": 2}], "not": {"type": "boolean"}},
    {"type": ["string", "object"], "if": {"type": "string"}, "then": {"type": "object"}, "else": {"required": ["a"]}},
    {"items": [{"const": 1}, {"enum": [False, {"a": 1}]}]},
    {"properties": {f"p{i}": {"const": i} for i in range(10)}, "additionalProperties": False},
    {"properties": {"a": {"enum": [1, 2]}, "b": {"const": None}}},
    {"minimum": 0, "maximum": 10},
    {"type": "integer", "minimum": 0.5, "exclusiveMaximum": 3},
    {"exclusiveMinimum": -1.5, "exclusiveMaximum": 1e3},
    {"minLength": 1, "maxLength": 3},
    {"pattern": "^a+$"},
    {"pattern": "b"},
    {"type": "string", "pattern": "^[\\w:.-]+$", "maxLength": 10},
    {"format": "date-time"},
    {"format": "uri"},
    {"format": "ipv4"},
    {"format": "ipv6"},
    {"format": "email"},
    {"minItems": 1, "maxItems": 2},
    {"uniqueItems": True},
    {"uniqueItems": False},
    {"items": {"type": "number"}},
    {"items": [{"type": "number"}, {"type": "string"}]},
    {"type": "array", "minItems": 1, "items": [{"type": "number"}, {"type": "string"}], "additionalItems": False},
    {"items": [{"type": "number"}], "additionalItems": {"type": "string"}},
    {"items": False},
    {"items": True},
    {"required": ["a", "b"]},
    {"properties": {"a": {"type": "integer"}, "b": {"enum": ["x"]}}},
    {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"properties": {"a": {"type": "integer"}}, "additionalProperties": {"type": "string"}},
    {"properties": {f"p{i}": {"type": "integer"} for i in range(10)}, "additionalProperties": False},
    {"properties": {f"p{i}": {"type": "integer"} for i in range(10)}},
    {"properties": {"a": True, "b": False, "": {"type": "null"}}, "additionalProperties": False},
    {"additionalProperties": False},
    {"additionalProperties": {"type": "number"}},
    {"dependencies": {"a": ["b"], "c": {"required": ["d"]}, "e": False, "f": True, "g": []}},
    {"allOf": [{"type": "number"}, {"maximum": 3}]},
    {"anyOf": [{"type": "string"}, {"type": "number", "minimum": 1}]},
    {"oneOf": [{"type": "integer"}, {"type": "number", "maximum": 3}]},
    {"oneOf": [{"type": "string"}, {"type": "array"}]},
    {"oneOf": [
        {"type": "object", "required": ["k"], "properties": {"k": {"enum": ["a"]}, "n": {"type": "integer"}}},
        {"type": "object", "required": ["k"], "properties": {"k": {"const": "b"}}, "additionalProperties": False},
    ]},
    {"anyOf": [
        {"type": "object", "required": ["k"], "properties": {"k": {"enum": ["a", "c"]}}},
        {"type": "object", "required": ["k"], "properties": {"k": {"type": "string", "enum": ["b"]}}},
    ]},
    {"not": {"type": "string"}},
    {"not": {"required": ["a"]}},
    {"if": {"properties": {"a": {"const": 1}}, "required": ["a"]}, "then": {"required": ["b"]},
     "else": {"required": ["c"]}},
    {"if": {"type": "number"}, "then": {"minimum": 0}},
    {"if": {"type": "number"}, "else": {"type": "string"}},
    {"then": {"type": "string"}},
    {"$ref": "#/definitions/p", "type": "string", "definitions": {"p": {"type": "integer"}}},
    {"properties": {"a": {"$ref": "#/definitions/p"}, "b": {"items": {"$ref": "#/definitions/p"}}},
     "definitions": {"p": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}},
    {"properties": {"a/b": {"$ref": "#/definitions/a~1b"}}, "definitions": {"a/b": {"type": "string"}}},
    {"title": "t", "description": "d", "$comment": "c", "examples": [1], "x-extra": {"type": "string"}},
    True,
    False,
    {"type": "object", "properties": {"n": {"type": "object", "properties": {"m": {"type": "integer"}},
                                             "additionalProperties": False}}},
]


@pytest.fixture(scope="module")
def keyword_checks() -> list[tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]]:
    found = []
    for schema in KEYWORD_SCHEMAS:
        document = {"$schema": DRAFT_07, **schema} if isinstance(schema, dict) else schema
        detailed = fastjsonschema.compile(copy.deepcopy(document), formats=_FORMATS)
        if isinstance(document, bool):
            document = {"$schema": DRAFT_07, "allOf": [document]}
        found.append((schema, detailed, generate_check(document, _FORMATS)))
    return found


json_keyword_values = st.one_of(
    st.sampled_from([*EDGES, Decimal("1.5"), (1, "a"), ("a", "a"), [(1,)], [[1], [True]],
                     [{"a": 1}, {"a": True}], [1, 1.0], {"a": 1, "b": "x"}, {"a": 1.0, "b": "y", "c": {}},
                     {"a": True}, {"k": "a"}, {"k": "a", "n": 1.5}, {"k": "b"}, {"k": "b", "n": 1}, {"k": "c"},
                     {"k": 1}, {"c": 1, "d": 2}, {"e": 1}, {"n": {"m": 1}}, {"n": {"m": 1, "o": 2}}]),
    json_values,
)


@settings(max_examples=250, deadline=None, derandomize=True)
@given(value=json_keyword_values)
def test_every_keyword_agrees_on_arbitrary_values(
    keyword_checks: list[tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]], value: Any
) -> None:
    for schema, detailed, generated in keyword_checks:
        assert verdict(generated, value) == verdict(detailed, copy.deepcopy(value)), (schema, value)


def test_every_keyword_on_every_edge_value(
    keyword_checks: list[tuple[Any, Callable[[Any], Any], Callable[[Any], Any]]]
) -> None:
    values = [*EDGES, {"a": 1}, {"a": 1, "b": 2}, {"a": 2, "c": 1}, {"a": "x"}, {"b": "x"}, {"a": None},
              {"a/b": "x"}, {"a/b": 1}, {"p1": 1, "p2": True}, {"p3": 2.0, "q": 1}, [1, "a"], [1, "a", 2],
              [{"p1": 1}, {"p2": None}], [{"x": "a"}], [{"x": 2}], [{"p1": 1.5}], [3, 1.0], [True], {"a": 0},
              {"a": 0.5}, {"a": "xy"}, {"a": "x"}, [1.5, "a", "b"], ["a", 1]]
    for schema, detailed, generated in keyword_checks:
        for value in values:
            assert verdict(generated, value) == verdict(detailed, copy.deepcopy(value)), (schema, value)


NAMES = ["a", "b", "c", "k", *(f"p{i}" for i in range(8))]
STRINGS = ["", "a", "ab", "abc", "2026-11-20T06:00:00Z", "2026-11-20", "http://x.org/a", "1.2.3.4", "a@b.co", "x y"]
TYPE_NAMES = ["string", "number", "integer", "boolean", "null", "array", "object"]
fuzz_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 1.5, -0.5, 2.5]), st.sampled_from(STRINGS)
)
fuzz_values = st.recursive(
    fuzz_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=5),
    max_leaves=10,
)
limits = st.sampled_from([0, 1, 2, -1, 0.5, 1.5, 3])
leaf_schemas = st.fixed_dictionaries({}, optional={
    "type": st.sampled_from(TYPE_NAMES) | st.lists(st.sampled_from(TYPE_NAMES), min_size=1, max_size=3, unique=True),
    "enum": st.lists(fuzz_scalars | st.sampled_from([[1], {"a": 1}, []]), min_size=1, max_size=3),
    "const": fuzz_scalars,
    "minimum": limits, "maximum": limits, "exclusiveMinimum": limits, "exclusiveMaximum": limits,
    "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3),
    "pattern": st.sampled_from(["^a", "b$", "^[a-c]+$", "\\d"]),
    "format": st.sampled_from(["date-time", "uri", "ipv4", "email"]),
    "minItems": st.integers(0, 3), "maxItems": st.integers(0, 3), "uniqueItems": st.booleans(),
    "required": st.lists(st.sampled_from(NAMES), max_size=3, unique=True),
})


def _compound(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    sub = inner | st.booleans()
    return st.tuples(leaf_schemas, st.fixed_dictionaries({}, optional={
        "properties": st.dictionaries(st.sampled_from(NAMES), sub, max_size=9),
        "additionalProperties": sub,
        "items": sub | st.lists(sub, max_size=3),
        "additionalItems": sub,
        "dependencies": st.dictionaries(
            st.sampled_from(NAMES), sub | st.lists(st.sampled_from(NAMES), max_size=2, unique=True), max_size=2
        ),
        "allOf": st.lists(sub, min_size=1, max_size=3),
        "anyOf": st.lists(sub, min_size=1, max_size=3),
        "oneOf": st.lists(sub, min_size=1, max_size=3),
        "not": sub, "if": sub, "then": sub, "else": sub,
    })).map(lambda pair: {**pair[0], **pair[1]})


random_schemas = st.recursive(leaf_schemas, _compound, max_leaves=6)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(schema=random_schemas, values=st.lists(fuzz_values, min_size=1, max_size=12))
def test_random_schemas_agree_on_random_values(schema: dict[str, Any], values: list[Any]) -> None:
    """Schemas made of every supported keyword, nested at random: the generator's verdict is
    fastjsonschema's on every value."""
    document = {"$schema": DRAFT_07, **schema}
    try:
        detailed = fastjsonschema.compile(copy.deepcopy(document), formats=_FORMATS)
    except fastjsonschema.JsonSchemaDefinitionException:
        return  # not a schema fastjsonschema takes (so neither does load_schema)
    generated = generate_check(document, _FORMATS)
    for value in values:
        assert verdict(generated, value) == verdict(detailed, copy.deepcopy(value)), value


def test_remembered_strings_keep_theverdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings that passed a pattern or a regex format are remembered (a bounded set); the verdict on
    them, and on strings that fail, stays the same."""
    import governance.schema_check as schema_check

    monkeypatch.setattr(schema_check, "REMEMBERED", 3)
    check = generate_check({"$schema": DRAFT_07, "type": "string", "pattern": "^a+$", "format": "uri"}, _FORMATS)
    check_uri = generate_check({"$schema": DRAFT_07, "format": "uri"}, _FORMATS)

    class Text(str):
        pass

    for _ in range(3):
        for n in range(1, 8):
            assert not verdict(check, "a" * n)  # no scheme: not a uri
            assert verdict(check_uri, f"a{n}:x")
            assert not verdict(check_uri, f"a{n} x")
        assert verdict(check_uri, Text("a:x"))
        assert not verdict(check_uri, Text("a x"))


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schema", [
    {"patternProperties": {"^a": {"type": "string"}}},
    {"propertyNames": {"maxLength": 3}},
    {"contains": {"type": "string"}},
    {"multipleOf": 2},
    {"minProperties": 1},
    {"maxProperties": 1},
    {"contentMediaType": "application/json"},
    {"properties": {"a": {"default": 1}}},
    {"properties": {"a": {"unknownKeyword": 1}}},
    {"$id": "http://example.org/s"},
    {"$ref": "http://example.org/s#"},
    {"$ref": "#/definitions/missing"},
    {"properties": {"a": {"$ref": "#"}}},
    {"format": "no-such-format"},
    {"type": "date"},
    {"items": {"anyOf": [{"$ref": "#/definitions/p"}]}, "definitions": {"p": {"not": {"$ref": "#/definitions/p"}}}},
    {"minLength": 1.5},
    {"maximum": "3"},
])
def test_unsupported_constructs_make_the_generator_refuse(schema: dict[str, Any]) -> None:
    document = {"$schema": DRAFT_07, **schema}
    with pytest.raises(UnsupportedSchemaError):
        generate_check(document, _FORMATS)
    try:
        fastjsonschema.compile(copy.deepcopy(document))
    except (fastjsonschema.JsonSchemaException, OSError):
        return  # fastjsonschema cannot compile it either (offline here): load_schema reports it
    check = hot_path_check(document)
    assert check is not None
    assert not check.__code__.co_filename.startswith("<schema check")  # fastjsonschema's code


def test_other_drafts_are_refused() -> None:
    with pytest.raises(UnsupportedSchemaError):
        generate_check({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"}, _FORMATS)
    with pytest.raises(UnsupportedSchemaError):
        generate_check({"type": "object"}, _FORMATS)


def test_a_generator_defect_falls_back_to_fastjsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    import governance.catalog as catalog

    def broken(document: Any, formats: Any) -> Any:
        raise RuntimeError("a bug in the generator")

    monkeypatch.setattr(catalog, "generate_check", broken)
    check = catalog.hot_path_check(_document("Alert"))
    assert check is not None
    assert not check.__code__.co_filename.startswith("<schema check")
    alert = _seeds()["Alert"][0]
    assert verdict(check, alert)
    assert not verdict(check, {**alert, "severity": "apocalyptic"})


def test_schemas_about_a_person_remember_none_of_their_identifiers() -> None:
    """Residents' ids (``refResident`` of a care Alert or observation) must not linger in the process after
    their records: schemas with a data subject remember no strings; the others still do."""
    from governance.catalog import SchemaCatalog

    catalog = SchemaCatalog.load()  # freshly compiled, whatever other tests did to the shared one

    def remembered(entity_type: str, value: str) -> list[set[str]]:
        check: Any = catalog.get(entity_type)._check
        return [v for v in check.__globals__.values() if isinstance(v, set) and value in v]

    resident = "urn:ngsi-ld:Person:R-99117"
    alert = {"id": "urn:ngsi-ld:Alert:H-7-1763600000-sos_button", "type": "Alert", "category": "health",
             "severity": "critical", "description": "SOS", "alertSource": "urn:ngsi-ld:Device:H-7",
             "dateIssued": "2026-11-20T02:12:44Z", "refResident": resident}
    schema = catalog.get("Alert")
    assert schema.subject_property == "refResident"
    schema.validate(alert)
    with pytest.raises(InvalidRecordError):
        schema.validate({**alert, "refResident": "urn:ngsi-ld:Person:R 1"})  # the pattern still applies
    assert remembered("Alert", resident) == [] and remembered("Alert", alert["id"]) == []

    station = "urn:ngsi-ld:Device:station-remembered-17"
    device = catalog.get("Device")
    assert device.subject_property is None
    device.validate({"id": station, "type": "Device", "controlledProperty": ["temperature"]})
    assert remembered("Device", station), "a schema without a data subject remembers identifiers it has seen"
