"""Validators for the official FIWARE Smart Data Models, resolving their ``$ref`` URLs offline.

The schemas and examples under ``tests/fixtures/smart_data_models`` are copied unchanged from the
public smart-data-models repositories (CC-BY-4.0, see the licence file there).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

ROOT = Path(__file__).parent / "fixtures" / "smart_data_models"

#: Where each official model lives, by entity type.
MODEL_DIRS: dict[str, str] = {
    "Streetlight": "Streetlighting/Streetlight",
    "StreetlightControlCabinet": "Streetlighting/StreetlightControlCabinet",
    "TrafficFlowObserved": "Transportation/TrafficFlowObserved",
    "CrowdFlowObserved": "Transportation/CrowdFlowObserved",
    "AirQualityObserved": "Environment/AirQualityObserved",
    "NoiseLevelObserved": "Environment/NoiseLevelObserved",
    "WeatherObserved": "Weather/WeatherObserved",
    "Device": "Device/Device",
    "Alert": "Alert/Alert",
}

_URLS: dict[str, str] = {
    "https://smart-data-models.github.io/data-models/common-schema.json": "common-schema.json",
    "https://smart-data-models.github.io/dataModel.Alert/alert-schema.json": "Alert/alert-schema.json",
    "https://smart-data-models.github.io/dataModel.Device/device-schema.json": "Device/device-schema.json",
    "https://smart-data-models.github.io/dataModel.Environment/Environment-schema.json": (
        "Environment/Environment-schema.json"
    ),
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/Environment-schema.json": (
        "Environment/Environment-schema.json"
    ),
    "https://smart-data-models.github.io/dataModel.Weather/weather-schema.json": "Weather/weather-schema.json",
}


def _retrieve(uri: str) -> Resource[Any]:
    base = uri.split("#", 1)[0]
    try:
        local = _URLS[base]
    except KeyError:
        raise LookupError(f"no offline copy of {uri}; add it to tests/smart_data_models.py") from None
    return Resource.from_contents(json.loads((ROOT / local).read_text("utf-8")))


@cache
def official_validator(entity_type: str) -> Draft202012Validator:
    """A Draft 2020-12 validator (format checking on) for the official schema of ``entity_type``."""
    schema = json.loads((ROOT / MODEL_DIRS[entity_type] / "schema.json").read_text("utf-8"))
    registry: Registry[Any] = Registry(retrieve=_retrieve)  # type: ignore[call-arg]
    return Draft202012Validator(schema, registry=registry, format_checker=FormatChecker())


def official_errors(entity: dict[str, Any]) -> list[str]:
    """Every way ``entity`` breaks its official schema, as readable lines (empty when valid)."""
    validator = official_validator(str(entity["type"]))
    return [
        f"{'/'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}"
        for err in validator.iter_errors(entity)
    ]


def official_example(entity_type: str, name: str = "example.json") -> Any:
    """One of the official examples of a model."""
    return json.loads((ROOT / MODEL_DIRS[entity_type] / "examples" / name).read_text("utf-8"))
