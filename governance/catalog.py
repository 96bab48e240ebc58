"""The catalog of standard entity schemas in ``schemas/`` and the governance metadata they carry.

Each ``schemas/<Type>.schema.json`` is a JSON Schema (draft-07) aligned with a FIWARE Smart Data Model,
compiled once: the per-record hot path runs our own generated verdict-only check
(:mod:`governance.schema_check`), fastjsonschema's detailed validator says why a record is refused.
Besides validation it says, for the policies of later stages, which city module and dataset the type
belongs to, which property names the data subject, and how sensitive every property is
(``x-classification``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
from fastjsonschema.draft07 import CodeGeneratorDraft07
from fastjsonschema.ref_resolver import RefResolver

from governance.errors import ConfigurationError, InvalidRecordError
from governance.resources import data_folder
from governance.schema_check import UnsupportedSchemaError, exclusive, generate_check

log = logging.getLogger(__name__)

NGSI_LD_CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"


class Classification(StrEnum):
    """How sensitive a property is, least to most."""

    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SPECIAL_CATEGORY = "special-category"

    @property
    def rank(self) -> int:
        return list(Classification).index(self)


@dataclass(frozen=True)
class EntitySchema:
    """One standard entity type: its validator and its governance metadata."""

    entity_type: str
    module: str
    dataset: str
    subject_property: str | None
    observed_at: str | None
    context: tuple[str, ...]
    classification: Mapping[str, Classification]
    units: Mapping[str, str]
    document: Mapping[str, Any] = field(repr=False)
    _validate: Callable[[Any], Any] = field(repr=False, compare=False)
    _check: Callable[[Any], Any] | None = field(default=None, repr=False, compare=False)
    """The hot-path validator (:func:`hot_path_check`): same verdicts, no error details."""

    def validate(self, entity: Mapping[str, Any]) -> None:
        """Raise ``InvalidRecordError`` naming the first property that breaks the schema."""
        if self._check is not None:
            try:
                self._check(entity)
                return
            except fastjsonschema.JsonSchemaValueException:
                pass  # the detailed validator below says why
        try:
            self._validate(entity)
        except fastjsonschema.JsonSchemaValueException as exc:
            prop = _property_path(exc.name or "data")
            raise InvalidRecordError(
                "schema_violation",
                f"{self.entity_type}: {prop or 'entity'} {_strip_prefix(exc.message)}",
                field=prop or None,
            ) from None

    def level_of(self, fields: Iterable[str]) -> Classification:
        """The most sensitive classification among ``fields`` (unknown fields count as personal)."""
        level = Classification.PUBLIC
        for name in fields:
            found = self.classification.get(name, Classification.PERSONAL)
            if found.rank > level.rank:
                level = found
        return level

    @property
    def relationships(self) -> frozenset[str]:
        """Properties that point at other entities: NGSI-LD Relationships.

        Smart Data Models name them ``ref*``; the few that are not (``Device.controlledAsset``) are
        marked ``"x-ngsi-type": "Relationship"`` in our schema.
        """
        return frozenset(
            name
            for name, prop in self.document.get("properties", {}).items()
            if name.startswith("ref") or prop.get("x-ngsi-type") == "Relationship"
        )

    @property
    def date_times(self) -> frozenset[str]:
        """Properties holding one instant (``format: date-time``), NGSI-LD ``DateTime`` values."""
        return frozenset(
            name for name, prop in self.document.get("properties", {}).items() if prop.get("format") == "date-time"
        )


class SchemaCatalog:
    """Every entity schema under one folder, by type name."""

    def __init__(self, schemas: Mapping[str, EntitySchema]) -> None:
        self._schemas = dict(schemas)

    @classmethod
    def load(cls, folder: Path | None = None) -> SchemaCatalog:
        folder = folder or data_folder("schemas")
        schemas = {}
        for path in sorted(folder.glob("*.schema.json")):
            schema = load_schema(path)
            schemas[schema.entity_type] = schema
        if not schemas:
            raise ConfigurationError(f"no *.schema.json files in {folder}")
        return cls(schemas)

    def get(self, entity_type: str) -> EntitySchema:
        try:
            return self._schemas[entity_type]
        except KeyError:
            raise InvalidRecordError(
                "unknown_entity_type", f"no standard schema for entity type {entity_type!r}"
            ) from None

    def __contains__(self, entity_type: object) -> bool:
        return entity_type in self._schemas

    def types(self) -> list[str]:
        return sorted(self._schemas)


@cache
def default_catalog() -> SchemaCatalog:
    """The catalog of the shipped ``schemas/`` folder (compiled once per process)."""
    return SchemaCatalog.load()


def load_schema(path: Path) -> EntitySchema:
    """Read and compile one schema file, checking its governance metadata is complete."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"schema {path.name} cannot be read: {exc}") from exc
    meta = document.get("x-citygov")
    if not isinstance(meta, dict):
        raise ConfigurationError(f"schema {path.name} has no 'x-citygov' governance block")
    entity_type = document.get("title")
    if not isinstance(entity_type, str) or path.name != f"{entity_type}.schema.json":
        raise ConfigurationError(f"schema {path.name}: 'title' must be the entity type of the file name")
    classification: dict[str, Classification] = {}
    units: dict[str, str] = {}
    for name, prop in document.get("properties", {}).items():
        label = prop.get("x-classification")
        try:
            classification[name] = Classification(label)
        except ValueError:
            raise ConfigurationError(
                f"schema {path.name}: property {name!r} has no valid x-classification ({label!r})"
            ) from None
        if "x-unit" in prop:
            units[name] = str(prop["x-unit"])
    subject = meta.get("subjectProperty")
    if subject is not None and subject not in classification:
        raise ConfigurationError(f"schema {path.name}: subjectProperty {subject!r} is not a property")
    try:
        validate = fastjsonschema.compile(document, formats=_FORMATS)
        # a schema about a person remembers none of the identifiers it has seen (see generate_check)
        check = hot_path_check(document, remember=subject is None)
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        raise ConfigurationError(f"schema {path.name} does not compile: {exc}") from exc
    context = meta.get("context") or []
    return EntitySchema(
        entity_type=entity_type,
        module=str(meta["module"]),
        dataset=str(meta["dataset"]),
        subject_property=subject,
        observed_at=meta.get("observedAt"),
        context=tuple([*([context] if isinstance(context, str) else context), NGSI_LD_CORE_CONTEXT]),
        classification=classification,
        units=units,
        document=document,
        _validate=validate,
        _check=check,
    )


def _date_time(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return False
    return parsed.tzinfo is not None and "T" in value


_FORMATS: dict[str, Callable[[str], bool]] = {"date-time": _date_time}


def _property_path(name: str) -> str:
    # fastjsonschema names look like "data.lamps[0].dim" or "data"
    return name[len("data") :].lstrip(".") if name.startswith("data") else name


def _strip_prefix(message: str) -> str:
    # "data.status must be one of [...]" -> "must be one of [...]"
    head, _, rest = message.partition(" ")
    return rest if head.startswith("data") else message


# --------------------------------------------------------------------------------------------------
# The hot-path validator
# --------------------------------------------------------------------------------------------------

DRAFT_07 = "http://json-schema.org/draft-07/schema#"


class _VerdictOnly(CodeGeneratorDraft07):
    """fastjsonschema's draft-07 code, raising a bare exception instead of building its message.

    The detailed code builds a message and a literal of the failing (sub)schema at every ``raise``;
    inside ``oneOf``/``anyOf``/``if`` branches that is paid on valid data too, branch after branch.
    """

    def exc(self, msg: str, *args: Any, append_to_msg: str | None = None, rule: str | None = None) -> None:
        self.l('raise JsonSchemaValueException("invalid")')

    def generate_if_then_else(self) -> None:
        """``if`` as a plain Python condition when it is simple (:func:`condition`), else as fastjsonschema
        writes it: a ``try`` whose failing branch raises — the common path for every ``if`` that does not
        hold, so paid by most valid entities."""
        test = condition(self._schema()["if"])
        if test is None:
            super().generate_if_then_else()  # type: ignore[no-untyped-call]
            return
        with self.l(f"if {test}:", optimize=False):
            self._block("then")
        with self.l("else:", optimize=False):
            self._block("else")

    def generate_not(self) -> None:
        test = condition(self._schema()["not"])
        if test is None:
            super().generate_not()  # type: ignore[no-untyped-call]
            return
        with self.l(f"if {test}:", optimize=False):
            self.exc("{name} must NOT match a disallowed definition", rule="not")

    def _schema(self) -> dict[str, Any]:
        definition: dict[str, Any] = self._definition  # type: ignore[assignment]
        return definition

    def _block(self, key: str) -> None:
        length = len(self._code)
        if key in self._schema():
            self.generate_func_code_block(  # type: ignore[no-untyped-call]
                self._schema()[key], self._variable, self._variable_name, clear_variables=True
            )
        if len(self._code) == length:
            self.l("pass")


def condition(schema: Any) -> str | None:
    """A Python expression (over ``{variable}``) true exactly when a value is valid under ``schema``,
    for the simple schemas conditions are written with: ``required`` names, and ``properties`` that
    each allow a ``const`` string or an ``enum`` of strings. ``None`` for anything else.

    Like the keywords themselves, the expression holds for any value that is not an object.
    """
    if not isinstance(schema, dict) or not set(schema) <= {"required", "properties"}:
        return None
    required = schema.get("required", [])
    properties = schema.get("properties", {})
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        return None
    if not isinstance(properties, dict):
        return None
    tests = [f"{_literal(name)} in {{variable}}" for name in required]
    for name, prop in properties.items():
        allowed = _allowed_strings(prop)
        if allowed is None:
            return None
        value = f"{{variable}}[{_literal(name)}]"
        options = ", ".join(_literal(v) for v in allowed)
        tests.append(
            f"({_literal(name)} not in {{variable}} or (isinstance({value}, str) and {value} in ({options},)))"
        )
    return f"(not isinstance({{variable}}, dict) or ({' and '.join(tests) or 'True'}))"


def _allowed_strings(prop: Any) -> list[str] | None:
    if not isinstance(prop, dict) or len(prop) != 1:
        return None
    if "const" in prop:
        return [prop["const"]] if isinstance(prop["const"], str) else None
    values = prop.get("enum")
    if isinstance(values, list) and values and all(isinstance(v, str) for v in values):
        return list(values)
    return None


def _literal(value: str) -> str:
    """A string literal for generated code, its braces doubled for fastjsonschema's ``str.format``."""
    return repr(value).replace("{", "{{").replace("}", "}}")


def hot_path_check(document: Mapping[str, Any], *, remember: bool = True) -> Callable[[Any], Any] | None:
    """The verdict-only check of ``document``: our own generated code (:mod:`governance.schema_check`,
    walking the entity's own keys), or fastjsonschema's (:func:`compile_check`) for a schema using
    something the generator does not implement — or that it fails on, which is logged: slower, never
    a different verdict."""
    try:
        return generate_check(document, _FORMATS, remember=remember)
    except UnsupportedSchemaError:
        pass
    except Exception:  # a generator defect must not stop the catalog loading; the fallback is exact
        log.warning("schema %s: generated check failed, using fastjsonschema's", document.get("title"), exc_info=True)
    return compile_check(document)


def compile_check(document: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    """A validator that accepts exactly what ``fastjsonschema.compile(document)`` accepts, faster.

    It raises a bare ``JsonSchemaValueException`` (no message): callers ask the detailed validator
    why. Two changes from the detailed one, neither changing the verdict: no error details, and a
    ``oneOf`` whose branches cannot both match (:func:`exclusive`) is checked as ``anyOf`` — it stops
    at the first branch that matches instead of trying them all. ``None`` for schemas that are not
    draft-07 (the only draft this is written for).
    """
    if document.get("$schema") != DRAFT_07:
        return None
    definition = _first_match(document)
    resolver = RefResolver.from_schema(definition, store={})
    generator = _VerdictOnly(  # type: ignore[no-untyped-call]
        definition, resolver=resolver, formats=_FORMATS, detailed_exceptions=False
    )
    state = generator.global_state
    exec(generator.func_code, state)  # noqa: S102  (fastjsonschema's own compile does the same)
    function = state[resolver.get_scope_name()]

    def check(value: Any) -> Any:
        return function(value, custom_formats=_FORMATS)

    return check


#: Keywords whose values are data, not subschemas.
_VALUES = frozenset({"enum", "const", "default", "examples"})


def _first_match(node: Any) -> Any:
    """A copy of a schema where every ``oneOf`` of mutually exclusive branches is an ``anyOf``."""
    if isinstance(node, list):
        return [_first_match(item) for item in node]
    if not isinstance(node, dict):
        return node
    copy = {key: value if key in _VALUES or key.startswith("x-") else _first_match(value)
            for key, value in node.items()}
    branches = copy.get("oneOf")
    if isinstance(branches, list) and "anyOf" not in copy and exclusive(branches):
        copy["anyOf"] = copy.pop("oneOf")
    return copy
