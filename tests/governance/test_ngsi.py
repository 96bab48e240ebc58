"""Key-values → NGSI-LD normalized, checked against the official normalized examples."""

from __future__ import annotations

import pytest

from governance.catalog import default_catalog
from governance.ngsi import to_ngsi_ld
from tests.smart_data_models import official_example


@pytest.mark.parametrize("entity_type", ["CrowdFlowObserved", "TrafficFlowObserved", "NoiseLevelObserved",
                                         "Streetlight", "Device"])
def test_normalized_form_matches_the_official_example_shape(entity_type: str) -> None:
    keyvalues = official_example(entity_type, "example.json")
    expected = official_example(entity_type, "example-normalized.jsonld")
    schema = default_catalog().get(entity_type)
    ours = to_ngsi_ld(keyvalues, schema)
    properties = schema.document["properties"]
    assert ours["id"] == keyvalues["id"] and ours["type"] == entity_type
    for name, attribute in expected.items():
        if name in ("id", "type", "@context") or name not in ours:
            continue
        assert ours[name]["type"] == attribute["type"], name
        if attribute["type"] == "Relationship":
            assert ours[name]["object"] == keyvalues[name]
        elif properties[name].get("format") == "date-time":
            assert ours[name]["value"] == {"@type": "DateTime", "@value": keyvalues[name]}, name
        else:
            assert ours[name]["value"] == keyvalues[name], name
    # an interval such as dateObserved "from/to" is not one DateTime: it stays a plain Property
    if "dateObserved" in ours and "/" in str(keyvalues["dateObserved"]):
        assert ours["dateObserved"]["value"] == keyvalues["dateObserved"]
    assert ours["@context"][-1] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
