"""Mondrian multidimensional k-anonymity (LeFevre, DeWitt and Ramakrishnan, ICDE 2006), strict partitioning.

The records are split recursively at the median of one quasi-identifier at a time — the one whose range,
relative to the whole table, is widest — as long as both halves keep at least ``k`` records; then every
record's quasi-identifiers are replaced by the summary of its partition (its equivalence class):

- a number (one axis): the number when the class holds one value, else ``{"min": a, "max": b}``;
- an instant (RFC 3339) or ``start/end`` interval (one axis, epoch seconds): the instant, else
  ``"start/end"``;
- a GeoJSON Point (two axes, lon and lat): the point, else the class's bounding box as a GeoJSON Polygon;
- anything else — text, booleans, mixed values — (ordered by canonical JSON): the value, a sorted list
  of the class's values, or ``"*"`` when the class holds every value of the table.

A quasi-identifier is a number, time or point dimension only when every value present is of that kind;
records missing such a value are anonymized apart from the others (their own classes, value absent).
Partitions that cannot reach ``k`` records (fewer than ``k`` records in all, or with a missing-value
pattern of their own) are **suppressed** and counted. :func:`verify_k_anonymous` then checks the table as it
will be released — grouped by the exact released values — and raises :class:`NotKAnonymousError` rather
than let a smaller class through. k-anonymity says nothing about the other (sensitive) fields of a class:
a class whose records share one sensitive value discloses it (no l-diversity here).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from governance.anonymize.errors import AnonymizationError, NotKAnonymousError
from governance.policy.enforce import parse_instant

MAX_RECORDS = 1_000_000


class Kind(StrEnum):
    NUMBER = "number"
    TIME = "time"
    POINT = "point"
    CATEGORY = "category"


@dataclass(frozen=True)
class KAnonymityResult:
    """The released records (input order), which input rows they are, and what it cost."""

    records: list[dict[str, Any]]
    kept: list[int]
    suppressed: int
    classes: int
    k: int
    quasi_identifiers: tuple[str, ...]
    kinds: Mapping[str, Kind]

    @property
    def average_class_size(self) -> float:
        return len(self.records) / self.classes if self.classes else 0.0


@dataclass(frozen=True)
class _Axis:
    """One ordered axis to split on: a quasi-identifier (or a point's lon or lat)."""

    qi: str
    part: int  # 0 = the value itself / longitude, 1 = latitude


def mondrian(records: Sequence[Mapping[str, Any]], quasi_identifiers: Sequence[str], k: int) -> KAnonymityResult:
    """Generalize ``records`` over ``quasi_identifiers`` into classes of at least ``k``; suppress leftovers.

    The result is verified with :func:`verify_k_anonymous` before it is returned.
    """
    qis = tuple(dict.fromkeys(quasi_identifiers))
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise AnonymizationError("k must be a positive integer")
    if not qis:
        raise AnonymizationError("k-anonymity needs at least one quasi-identifier")
    if len(records) > MAX_RECORDS:
        raise AnonymizationError(f"k-anonymity runs on at most {MAX_RECORDS} records at a time")
    kinds = {qi: _kind_of([r.get(qi) for r in records]) for qi in qis}
    table = _Table(records, qis, kinds)
    groups: dict[tuple[bool, ...], list[int]] = defaultdict(list)
    for index in range(len(records)):
        groups[table.missing_pattern(index)].append(index)
    classes: list[list[int]] = []
    suppressed = 0
    for members in groups.values():
        if len(members) < k:
            suppressed += len(members)
            continue
        classes.extend(table.partition(members, k))
    out: dict[int, dict[str, Any]] = {}
    for members in classes:
        summary = table.summarize(members)
        for index in members:
            row = dict(records[index])
            for qi in qis:
                if qi in summary:
                    row[qi] = summary[qi]
            out[index] = row
    kept = sorted(out)
    released = [out[i] for i in kept]
    verify_k_anonymous(released, qis, k)
    return KAnonymityResult(released, kept, suppressed, len(classes), k, qis, kinds)


def equivalence_classes(records: Sequence[Mapping[str, Any]], quasi_identifiers: Sequence[str]) -> Counter[bytes]:
    """Class sizes, keyed by the canonical JSON of the released quasi-identifier values (absent = null)."""
    return Counter(
        orjson.dumps([r.get(q) for q in quasi_identifiers], option=orjson.OPT_SORT_KEYS) for r in records
    )


def verify_k_anonymous(records: Sequence[Mapping[str, Any]], quasi_identifiers: Sequence[str], k: int) -> None:
    """Raise :class:`NotKAnonymousError` unless every class of the table as released has ``k`` records or more."""
    if not quasi_identifiers:
        raise NotKAnonymousError("no quasi-identifiers to check k-anonymity over")
    sizes = equivalence_classes(records, quasi_identifiers)
    small = sum(1 for size in sizes.values() if size < k)
    if small:
        raise NotKAnonymousError(
            f"{small} of {len(sizes)} equivalence classes over {', '.join(quasi_identifiers)} have fewer than "
            f"k={k} records; nothing is released"
        )


# --- values ------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _point(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, Mapping) or value.get("type") != "Point":
        return None
    coordinates = value.get("coordinates")
    if not isinstance(coordinates, list | tuple) or len(coordinates) != 2:
        return None
    lon, lat = coordinates
    if not (_is_number(lon) and _is_number(lat)) or not (-180 <= lon <= 180 and -90 <= lat <= 90):
        return None
    return float(lon), float(lat)


def _interval(value: Any) -> tuple[float, float] | None:
    """An instant or ``start/end`` interval as epoch seconds (start, end)."""
    if not isinstance(value, str) or len(value) > 80:
        return None
    parts = value.split("/")
    if len(parts) > 2:
        return None
    moments = [parse_instant(p) for p in parts]
    if any(m is None for m in moments):
        return None
    seconds = [m.timestamp() for m in moments if m is not None]
    if seconds[-1] < seconds[0]:
        return None
    return seconds[0], seconds[-1]


def _kind_of(values: Sequence[Any]) -> Kind:
    present = [v for v in values if v is not None]
    if not present:
        return Kind.CATEGORY
    if all(_is_number(v) for v in present):
        return Kind.NUMBER
    if all(_interval(v) is not None for v in present):
        return Kind.TIME
    if all(_point(v) is not None for v in present):
        return Kind.POINT
    return Kind.CATEGORY


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _instant_text(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    if moment.microsecond:
        return moment.isoformat().replace("+00:00", "Z")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class _Table:
    """The quasi-identifiers of the input as numbers: per axis a (low, high) range for every record."""

    def __init__(self, records: Sequence[Mapping[str, Any]], qis: tuple[str, ...], kinds: Mapping[str, Kind]) -> None:
        self.records = records
        self.qis = qis
        self.kinds = kinds
        self.axes: list[_Axis] = []
        self.low: dict[_Axis, list[float]] = {}
        self.high: dict[_Axis, list[float]] = {}
        self.present: dict[str, list[bool]] = {}
        self.categories: dict[str, list[Any]] = {}  # sorted distinct values
        self.category_keys: dict[str, list[bytes]] = {}
        for qi in qis:
            values = [r.get(qi) for r in records]
            kind = kinds[qi]
            if kind is Kind.CATEGORY:
                keys = [_canonical(v) for v in values]
                distinct = sorted(set(keys))
                rank = {key: float(i) for i, key in enumerate(distinct)}
                axis = _Axis(qi, 0)
                self.axes.append(axis)
                self.low[axis] = self.high[axis] = [rank[key] for key in keys]
                self.present[qi] = [True] * len(values)
                self.category_keys[qi] = keys
                by_key = {key: value for key, value in zip(keys, values, strict=True)}
                self.categories[qi] = [by_key[key] for key in distinct]
                continue
            self.present[qi] = [v is not None for v in values]
            if kind is Kind.POINT:
                points = [_point(v) for v in values]
                for part in (0, 1):
                    axis = _Axis(qi, part)
                    self.axes.append(axis)
                    self.low[axis] = self.high[axis] = [p[part] if p else math.nan for p in points]
            else:
                ranges = [(float(v), float(v)) if kind is Kind.NUMBER and v is not None
                          else (_interval(v) if v is not None else None) for v in values]
                axis = _Axis(qi, 0)
                self.axes.append(axis)
                self.low[axis] = [r[0] if r else math.nan for r in ranges]
                self.high[axis] = [r[1] if r else math.nan for r in ranges]
        self.span = {axis: self._width(axis, range(len(records))) for axis in self.axes}

    def missing_pattern(self, index: int) -> tuple[bool, ...]:
        return tuple(self.present[qi][index] for qi in self.qis)

    def _mid(self, axis: _Axis, index: int) -> float:
        return (self.low[axis][index] + self.high[axis][index]) / 2

    def _width(self, axis: _Axis, members: Sequence[int] | range) -> float:
        present = [i for i in members if self.present[axis.qi][i]]
        if not present:
            return 0.0
        return max(self.high[axis][i] for i in present) - min(self.low[axis][i] for i in present)

    def partition(self, members: list[int], k: int) -> list[list[int]]:
        """Strict Mondrian with median cuts; every returned partition holds at least ``k`` records."""
        done: list[list[int]] = []
        todo = [members]
        while todo:
            part = todo.pop()
            cut = self._best_cut(part, k)
            if cut is None:
                done.append(part)
            else:
                todo.extend(cut)
        return done

    def _best_cut(self, part: list[int], k: int) -> tuple[list[int], list[int]] | None:
        if len(part) < 2 * k:
            return None
        order = []
        for axis in self.axes:
            span = self.span[axis]
            width = self._width(axis, part)
            if span > 0 and width > 0:
                order.append((-(width / span), self.axes.index(axis), axis))
        for _, _, axis in sorted(order):
            cut = self._median_cut(part, axis, k)
            if cut is not None:
                return cut
        return None

    def _median_cut(self, part: list[int], axis: _Axis, k: int) -> tuple[list[int], list[int]] | None:
        """Cut between two distinct values, as near the median as strictness allows (both sides ≥ k)."""
        if not all(self.present[axis.qi][i] for i in part):
            return None
        ranked = sorted(part, key=lambda i: self._mid(axis, i))
        mids = [self._mid(axis, i) for i in ranked]
        n = len(ranked)
        best: int | None = None
        for position in range(k, n - k + 1):
            if mids[position - 1] < mids[position] and (best is None or abs(position - n / 2) < abs(best - n / 2)):
                best = position
        if best is None:
            return None
        return ranked[:best], ranked[best:]

    def summarize(self, members: list[int]) -> dict[str, Any]:
        """The generalized value of each quasi-identifier over one class (absent ones stay absent)."""
        out: dict[str, Any] = {}
        for qi in self.qis:
            kind = self.kinds[qi]
            if kind is Kind.CATEGORY:
                keys = {self.category_keys[qi][i] for i in members}
                if len(keys) == 1:
                    out[qi] = self.records[members[0]].get(qi)
                elif len(keys) == len(self.categories[qi]):
                    out[qi] = "*"
                else:
                    out[qi] = [v for v in self.categories[qi] if _canonical(v) in keys]
                continue
            if not self.present[qi][members[0]]:
                continue  # a missing-value class: the value stays absent
            if kind is Kind.POINT:
                lon_axis, lat_axis = _Axis(qi, 0), _Axis(qi, 1)
                west = min(self.low[lon_axis][i] for i in members)
                east = max(self.high[lon_axis][i] for i in members)
                south = min(self.low[lat_axis][i] for i in members)
                north = max(self.high[lat_axis][i] for i in members)
                if west == east and south == north:
                    out[qi] = {"type": "Point", "coordinates": [west, south]}
                else:
                    out[qi] = {"type": "Polygon", "coordinates": [[
                        [west, south], [east, south], [east, north], [west, north], [west, south]]]}
                continue
            axis = _Axis(qi, 0)
            low = min(self.low[axis][i] for i in members)
            high = max(self.high[axis][i] for i in members)
            if kind is Kind.NUMBER:
                numbers: list[Any] = [self.records[i].get(qi) for i in members]
                out[qi] = numbers[0] if low == high else {"min": min(numbers), "max": max(numbers)}
            else:
                values = {self.records[i].get(qi) for i in members}
                if len(values) == 1:
                    out[qi] = next(iter(values))
                else:
                    out[qi] = f"{_instant_text(low)}/{_instant_text(high)}"
        return out
