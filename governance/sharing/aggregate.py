"""Exact aggregates (count, sum, mean by group) over shaped records, for answers without a noise budget."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def aggregate(records: Sequence[Mapping[str, Any]], function: str, field: str | None,
              group_by: Sequence[str]) -> list[dict[str, Any]]:
    """One row per group (the group's values plus ``count``, ``sum`` or ``mean``), groups in canonical order.

    Sums and means use the records whose ``field`` is a finite number; a group without any has a null
    ``sum`` or ``mean``. Without ``group_by`` there is exactly one row, even over no records.
    """
    groups: dict[bytes, list[Mapping[str, Any]]] = {}
    for record in records:
        key = orjson.dumps([record.get(name) for name in group_by], option=orjson.OPT_SORT_KEYS)
        groups.setdefault(key, []).append(record)
    if not group_by and not groups:
        groups[b"[]"] = []
    rows: list[dict[str, Any]] = []
    for key in sorted(groups):
        members = groups[key]
        row: dict[str, Any] = dict(zip(group_by, orjson.loads(key), strict=True))
        if function == "count":
            row["count"] = len(members)
        else:
            values = [v for v in (_number(m.get(field or "")) for m in members) if v is not None]
            if function == "sum":
                row["sum"] = math.fsum(values) if values else None
            else:
                row["mean"] = math.fsum(values) / len(values) if values else None
        rows.append(row)
    return rows
