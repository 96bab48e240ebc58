"""One check for adapter output: valid under the official Smart Data Model and under our schema."""

from __future__ import annotations

from typing import Any

from governance.catalog import default_catalog
from tests.smart_data_models import official_errors


def assert_valid(entity: dict[str, Any]) -> None:
    assert official_errors(entity) == [], f"{entity.get('id')} breaks the official schema"
    default_catalog().get(str(entity["type"])).validate(entity)
