"""Entity representations: key-values (as stored) and NGSI-LD normalized."""

from __future__ import annotations

from typing import Any

from governance.catalog import EntitySchema

_GEO = {"location"}
_TEMPORAL_PREFIXES = ("date",)


def to_ngsi_ld(entity: dict[str, Any], schema: EntitySchema) -> dict[str, Any]:
    """Key-values → NGSI-LD normalized: Property / GeoProperty / Relationship, with ``@context``.

    Date-time properties are typed ``DateTime`` as NGSI-LD requires; measured properties carry
    their UN/CEFACT ``unitCode``.
    """
    out: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
    relationships = schema.relationships
    for name, value in entity.items():
        if name in ("id", "type"):
            continue
        if name in _GEO:
            out[name] = {"type": "GeoProperty", "value": value}
        elif name in relationships:
            out[name] = {"type": "Relationship", "object": value}
        elif name.startswith(_TEMPORAL_PREFIXES) and isinstance(value, str) and _is_datetime(schema, name):
            out[name] = {"type": "Property", "value": {"@type": "DateTime", "@value": value}}
        else:
            prop: dict[str, Any] = {"type": "Property", "value": value}
            if name in schema.units:
                prop["unitCode"] = schema.units[name]
            out[name] = prop
    out["@context"] = list(schema.context)
    return out


def _is_datetime(schema: EntitySchema, name: str) -> bool:
    prop = schema.document.get("properties", {}).get(name, {})
    return bool(prop.get("format") == "date-time")
