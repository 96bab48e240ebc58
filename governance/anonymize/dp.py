"""Differentially private count, sum and mean through OpenDP's Laplace mechanisms.

**Unit of privacy.** Two tables are neighbours when they differ in all the records of one data subject,
and each subject counts with at most ``contributions`` records (:func:`bound_contributions` keeps the
first ones and drops the rest); for data without a subject each record is its own subject. The OpenDP
input distance is therefore ``d_in = contributions`` under the symmetric distance.

**Mechanisms** (every noise scale found by ``opendp.binary_search`` against OpenDP's own privacy map):

- count: ``count >> laplace`` (discrete, on integers), ε;
- sum: ``clamp(bounds) >> sum >> laplace``, ε;
- mean: noisy sum / noisy count (ε/2 each), clamped to the bounds;
- count by group: ``count_by >> laplace_threshold`` — only groups whose noisy count passes a threshold
  are released, so the set of groups is private too; (ε, δ), needs δ > 0;
- sum or mean by group: the released groups and counts as above with ε/2, then the vector of clamped
  group sums through ``laplace`` on the L1 distance with ε/2. Its sensitivity is the clamped sum's privacy
  map at ``d_in``: a subject's records, wherever they fall, move the group sums by that much in total.

Grouped answers without δ are refused: releasing which groups exist would not be private. Bounds for
sums and means must not depend on the data (they come from the schema or the request). Answers are
post-processed (counts at least 0, means inside the bounds), which costs no privacy.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from governance.anonymize.errors import PrivacyParameterError

Function = Literal["count", "sum", "mean"]
MAX_NOISE_SCALE = 1e15


def _dp() -> Any:
    """OpenDP's prelude, with the ``contrib`` features the Laplace measurements need (imported on first use)."""
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


@dataclass(frozen=True)
class DpQuery:
    function: Function
    epsilon: float
    delta: float = 0.0
    field: str | None = None
    group_by: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None
    contributions: int = 1

    def check(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyParameterError("epsilon must be a positive number")
        if not (math.isfinite(self.delta) and 0 <= self.delta < 1):
            raise PrivacyParameterError("delta must be in [0, 1)")
        if self.contributions < 1:
            raise PrivacyParameterError("each subject contributes at least one record")
        if self.function != "count":
            if self.field is None:
                raise PrivacyParameterError(f"a {self.function} needs a field")
            if self.bounds is None:
                raise PrivacyParameterError(
                    f"a differentially private {self.function} of {self.field} needs clamping bounds (the schema "
                    "gives none: state them in the request)"
                )
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise PrivacyParameterError("bounds must be two finite numbers, lower first")
        if self.group_by and self.delta <= 0:
            raise PrivacyParameterError(
                "a grouped differentially private answer releases only groups above a noisy threshold, which needs "
                "delta > 0 in the noise budget; ask without group_by"
            )


@dataclass(frozen=True)
class DpAnswer:
    rows: list[dict[str, Any]]
    """One row per released group: the group's values and the noisy ``count`` / ``sum`` / ``mean``."""
    epsilon: float
    delta: float
    used_records: int
    """Records that entered the computation after contribution bounding (not released: internal use)."""


def bound_contributions(
    records: Sequence[Mapping[str, Any]], subjects: Sequence[str | None] | None, limit: int
) -> list[Mapping[str, Any]]:
    """The first ``limit`` records of each subject (``subjects[i]`` is record ``i``'s; none: its own subject).

    ``subjects=None`` (data without data subjects) keeps every record, each its own unit.
    """
    if subjects is None:
        return list(records)
    if len(subjects) != len(records):
        raise PrivacyParameterError("one subject per record is needed to bound contributions")
    seen: dict[Hashable, int] = defaultdict(int)
    kept: list[Mapping[str, Any]] = []
    for index, (record, subject) in enumerate(zip(records, subjects, strict=True)):
        key: Hashable = subject if isinstance(subject, str) and subject else ("record", index)
        if seen[key] < limit:
            seen[key] += 1
            kept.append(record)
    return kept


def dp_aggregate(records: Sequence[Mapping[str, Any]], query: DpQuery) -> DpAnswer:
    """Answer ``query`` over ``records`` (already bounded to ``query.contributions`` per subject)."""
    query.check()
    if query.group_by:
        return _grouped(records, query)
    return _scalar(records, query)


def _values(records: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    out: list[float] = []
    for record in records:
        value = record.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append(float(value))
    return out


def _scale(make: Callable[[float], Any], d_in: Any, epsilon: float, *,
           pick: Callable[[Any], float] = float) -> float:
    """The smallest noise scale whose measurement ``make(scale)`` maps ``d_in`` to at most ε."""
    dp = _dp()
    scale = float(dp.binary_search(lambda s: pick(make(s).map(d_in)) <= epsilon, bounds=(1e-9, MAX_NOISE_SCALE),
                                   T=float))
    if pick(make(scale).map(d_in)) > epsilon:  # pragma: no cover - binary_search returns a passing scale
        raise PrivacyParameterError("no noise scale reaches the requested epsilon")
    return scale


def _calibrate(make: Callable[[float], Any], d_in: Any, epsilon: float) -> Any:
    """The measurement from ``make(scale)`` with the smallest scale whose privacy map at ``d_in`` is ≤ ε."""
    return make(_scale(make, d_in, epsilon))


def _noisy_count(n: int, epsilon: float, contributions: int) -> int:
    dp = _dp()
    space = dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance()
    counter = space >> dp.t.then_count()
    measurement = _calibrate(lambda s: counter >> dp.m.then_laplace(scale=s), contributions, epsilon)
    return max(0, int(measurement([0] * n)))


def _clamped_sum(bounds: tuple[float, float]) -> Any:
    dp = _dp()
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.symmetric_distance()
    return space >> dp.t.then_clamp((float(bounds[0]), float(bounds[1]))) >> dp.t.then_sum()


def _noisy_sum(values: list[float], bounds: tuple[float, float], epsilon: float, contributions: int) -> float:
    dp = _dp()
    summer = _clamped_sum(bounds)
    measurement = _calibrate(lambda s: summer >> dp.m.then_laplace(scale=s), contributions, epsilon)
    return float(measurement(values))


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _scalar(records: Sequence[Mapping[str, Any]], query: DpQuery) -> DpAnswer:
    c = query.contributions
    if query.function == "count":
        return DpAnswer([{"count": _noisy_count(len(records), query.epsilon, c)}], query.epsilon, 0.0, len(records))
    assert query.field is not None and query.bounds is not None
    values = _values(records, query.field)
    if query.function == "sum":
        total = _noisy_sum(values, query.bounds, query.epsilon, c)
        return DpAnswer([{"sum": total}], query.epsilon, 0.0, len(values))
    half = query.epsilon / 2
    count = _noisy_count(len(values), half, c)
    total = _noisy_sum(values, query.bounds, half, c)
    mean = _clamp(total / count, query.bounds) if count > 0 else None
    return DpAnswer([{"mean": mean}], query.epsilon, 0.0, len(values))


def _group_key(record: Mapping[str, Any], group_by: Sequence[str]) -> str:
    return orjson.dumps([record.get(name) for name in group_by], option=orjson.OPT_SORT_KEYS).decode()


def _grouped(records: Sequence[Mapping[str, Any]], query: DpQuery) -> DpAnswer:
    dp = _dp()
    c = query.contributions
    if query.function != "count":
        assert query.field is not None
        records = [r for r in records if _values([r], query.field)]
    keys = [_group_key(r, query.group_by) for r in records]
    epsilon_keys = query.epsilon if query.function == "count" else query.epsilon / 2
    space = dp.vector_domain(dp.atom_domain(T=str)), dp.symmetric_distance()
    counter = space >> dp.t.then_count_by()

    def thresholded(scale: float, threshold: int) -> Any:
        return counter >> dp.m.then_laplace_threshold(scale=scale, threshold=threshold)

    scale = _scale(lambda s: thresholded(s, 2**30), c, epsilon_keys, pick=lambda d: float(d[0]))
    threshold = dp.binary_search(lambda t: float(thresholded(scale, t).map(c)[1]) <= query.delta,
                                 bounds=(c, 2**30), T=int)
    measurement = thresholded(scale, threshold)
    eps, delta = measurement.map(c)
    if eps > epsilon_keys or delta > query.delta:  # pragma: no cover - guarded by the searches above
        raise PrivacyParameterError("the thresholded count does not meet the privacy parameters")
    counts: dict[str, Any] = measurement(keys)
    released = sorted(counts)
    rows = [dict(zip(query.group_by, orjson.loads(key), strict=True)) for key in released]
    if query.function == "count":
        for row, key in zip(rows, released, strict=True):
            row["count"] = max(0, int(counts[key]))
        return DpAnswer(rows, query.epsilon, query.delta, len(records))
    assert query.field is not None and query.bounds is not None
    bounds = query.bounds
    by_key: dict[str, list[float]] = defaultdict(list)
    for record, key in zip(records, keys, strict=True):
        by_key[key].extend(_values([record], query.field))
    if released:
        sensitivity = float(_clamped_sum(bounds).map(c))
        vector = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l1_distance(T=float)
        noisy = _calibrate(lambda s: vector >> dp.m.then_laplace(scale=s), sensitivity, query.epsilon / 2)
        sums = [math.fsum(_clamp(v, bounds) for v in by_key[key]) for key in released]
        totals = [float(x) for x in noisy(sums)]
    else:
        totals = []
    for row, key, total in zip(rows, released, totals, strict=True):
        if query.function == "sum":
            row["sum"] = total
        else:
            count = max(0, int(counts[key]))
            row["mean"] = _clamp(total / count, bounds) if count > 0 else None
    return DpAnswer(rows, query.epsilon, query.delta, len(records))
