"""The quality step's frame, built column by column, is the frame the per-row dicts would give."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from governance.ingest.quality import default_suites, flatten, frame_columns
from tests.adapters.make_golden import adapter_names, read_golden


def _frames(entities: list[dict[str, Any]], columns: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    by_rows = pd.DataFrame([flatten(e, columns) for e in entities], columns=columns)
    by_columns = pd.DataFrame(frame_columns(entities, columns), columns=columns)
    return by_rows, by_columns


def _assert_same(entities: list[dict[str, Any]], columns: list[str]) -> None:
    by_rows, by_columns = _frames(entities, columns)
    assert list(by_rows.dtypes) == list(by_columns.dtypes)
    pd.testing.assert_frame_equal(by_rows, by_columns)


@pytest.mark.parametrize("name", adapter_names())
def test_golden_outputs(name: str) -> None:
    suites = default_suites()
    by_type: dict[str, list[dict[str, Any]]] = {}
    for row in read_golden(name):
        for entity in row.get("entities", []):
            by_type.setdefault(entity["type"], []).append(entity)
    for entity_type, entities in by_type.items():
        _assert_same(entities, suites[entity_type].columns())


@pytest.mark.parametrize("entities", [
    [{"x": 1, "y": None}, {"x": None, "y": True}, {"x": 2.5, "y": "a"}, {"y": [1]}, {"x": {"a": 1}}],
    [{"x": 1}],
    [{"x": None}],
    [{"x": True}, {"x": 1}],
    [{"x": "1"}, {"x": 1}],
    [{"x": 1}, {"x": 2**63}],
    [{"location": {"type": "Point", "coordinates": [1, 2]}}, {"location": {"type": "Point", "coordinates": [1]}},
     {"location": {"type": "LineString", "coordinates": [[1, 2], [3, 4]]}}, {"location": "here"}, {}],
])
def test_awkward_values(entities: list[dict[str, Any]]) -> None:
    _assert_same(entities, ["x", "y", "location_lon", "location_lat"])


def test_nested_subclasses_and_other_mappings() -> None:
    """Values that are dict or list subclasses count as nested; entities that are not plain dicts work too."""
    from collections import OrderedDict
    from types import MappingProxyType

    class Readings(list[int]):
        pass

    entities: list[Any] = [{"x": OrderedDict(a=1), "y": 1}, {"x": 3, "y": Readings([1])}, {"x": 4.5, "y": 2}]
    _assert_same(entities, ["x", "y"])
    proxies = [MappingProxyType(e) for e in entities]
    assert frame_columns(proxies, ["x", "y"]) == {"x": [None, 3, 4.5], "y": [1, None, 2]}
