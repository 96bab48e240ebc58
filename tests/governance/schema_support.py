"""Helpers shared by the schema-check tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastjsonschema


def verdict(validate: Callable[[Any], Any], value: Any) -> bool:
    """True if ``validate`` (a compiled fastjsonschema or generated check) accepts ``value``."""
    try:
        validate(value)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True
