"""Entity representations: key-values (as stored) and NGSI-LD normalized."""

from __future__ import annotations

from typing import Any

from governance.catalog import EntitySchema

_GEO = {"location"}


def to_ngsi_ld(entity: dict[str, Any], schema: EntitySchema) -> dict[str, Any]:
    """Key-values → NGSI-LD normalized: Property / GeoProperty / Relationship, with ``@context``.

    Date-time properties are typed ``DateTime`` as NGSI-LD requires; measured properties carry
    their UN/CEFACT ``unitCode``.
    """
    entity_id = str(entity["id"])
    if entity_id.startswith("psn:"):  # a pseudonymized id stays a URI of the one id scheme
        entity_id = f"urn:ngsi-ld:{entity['type']}:{entity_id}"
    out: dict[str, Any] = {"id": entity_id, "type": entity["type"]}
    relationships = schema.relationships
    date_times = schema.date_times
    for name, value in entity.items():
        if name in ("id", "type"):
            continue
        if name in _GEO:
            out[name] = {"type": "GeoProperty", "value": value}
        elif name in relationships:
            out[name] = {"type": "Relationship", "object": value}
        elif name in date_times and isinstance(value, str):
            out[name] = {"type": "Property", "value": {"@type": "DateTime", "@value": value}}
        else:
            prop: dict[str, Any] = {"type": "Property", "value": value}
            if name in schema.units:
                prop["unitCode"] = schema.units[name]
            out[name] = prop
    out["@context"] = list(schema.context)
    return out

