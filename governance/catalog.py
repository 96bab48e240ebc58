"""The catalog of standard entity schemas in ``schemas/`` and the governance metadata they carry.

Each ``schemas/<Type>.schema.json`` is a JSON Schema (draft-07, compiled once with fastjsonschema for
the per-record hot path) aligned with a FIWARE Smart Data Model. Besides validation it says, for the
policies of later stages, which city module and dataset the type belongs to, which property names the
data subject, and how sensitive every property is (``x-classification``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from governance.errors import ConfigurationError, InvalidRecordError
from governance.resources import data_folder

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

    def validate(self, entity: Mapping[str, Any]) -> None:
        """Raise ``InvalidRecordError`` naming the first property that breaks the schema."""
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
    )


def _date_time(value: str) -> bool:
    from datetime import datetime

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
