"""Differentially private aggregates through OpenDP: loose statistical checks, exact parameter handling."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from governance.anonymize.dp import DpQuery, bound_contributions, dp_aggregate
from governance.anonymize.errors import PrivacyParameterError


def readings(n: int) -> list[dict[str, Any]]:
    return [{"district": "north" if i % 4 else "south", "value": float(i % 50), "junk": "x"} for i in range(n)]


def test_a_noisy_count_is_near_the_truth_and_not_always_exact() -> None:
    answers = [dp_aggregate(readings(500), DpQuery("count", 0.5)).rows[0]["count"] for _ in range(40)]
    assert abs(statistics.mean(answers) - 500) < 4  # discrete Laplace, scale 2: the mean of 40 draws is close
    assert len(set(answers)) > 3  # and it is noise, not the exact count every time
    assert all(a >= 0 for a in answers)


def test_a_noisy_sum_is_clamped_to_its_bounds() -> None:
    rows = [{"value": 1e9}] * 100  # far outside the bounds: each counts as 10 at most
    answers = [dp_aggregate(rows, DpQuery("sum", 1.0, field="value", bounds=(0.0, 10.0))).rows[0]["sum"]
               for _ in range(30)]
    assert abs(statistics.mean(answers) - 1000) < 30  # scale 10 (sensitivity 10, epsilon 1)


def test_a_noisy_mean_stays_inside_the_bounds() -> None:
    rows = readings(2000)
    answers = [dp_aggregate(rows, DpQuery("mean", 1.0, field="value", bounds=(0.0, 50.0))).rows[0]["mean"]
               for _ in range(10)]
    assert all(0.0 <= a <= 50.0 for a in answers)
    assert abs(statistics.mean(answers) - 24.5) < 1.5


def test_non_numbers_do_not_count_in_sums() -> None:
    rows: list[dict[str, Any]] = [{"value": v} for v in (True, "12", None, float("nan"), float("inf"))] * 200
    answer = dp_aggregate(rows, DpQuery("sum", 5.0, field="value", bounds=(0.0, 100.0)))
    assert answer.used_records == 0
    assert abs(answer.rows[0]["sum"]) < 200


def test_grouped_counts_release_only_groups_above_the_threshold() -> None:
    rows = [{"district": "north"}] * 3000 + [{"district": "tiny"}] * 2
    answer = dp_aggregate(rows, DpQuery("count", 1.0, delta=1e-6, group_by=("district",)))
    groups = {r["district"]: r["count"] for r in answer.rows}
    assert "tiny" not in groups  # two records never pass a threshold calibrated for delta = 1e-6
    assert abs(groups["north"] - 3000) < 60
    assert (answer.epsilon, answer.delta) == (1.0, 1e-6)


def test_grouped_means_use_half_the_epsilon_for_groups_and_half_for_sums() -> None:
    rows = readings(4000)
    answer = dp_aggregate(rows, DpQuery("mean", 2.0, delta=1e-6, field="value", group_by=("district",),
                                        bounds=(0.0, 50.0)))
    assert {r["district"] for r in answer.rows} == {"north", "south"}
    assert all(0 <= r["mean"] <= 50 for r in answer.rows)


@pytest.mark.parametrize(("query", "message"), [
    (DpQuery("count", 0.0), "epsilon"),
    (DpQuery("count", float("nan")), "epsilon"),
    (DpQuery("count", 1.0, delta=1.0), "delta"),
    (DpQuery("sum", 1.0, field="value"), "bounds"),
    (DpQuery("mean", 1.0, field="value", bounds=(5.0, 5.0)), "bounds"),
    (DpQuery("sum", 1.0, field="value", bounds=(0.0, float("inf"))), "bounds"),
    (DpQuery("count", 1.0, group_by=("district",)), "delta > 0"),
    (DpQuery("sum", 1.0, bounds=(0.0, 1.0)), "needs a field"),
    (DpQuery("count", 1.0, contributions=0), "at least one"),
])
def test_unanswerable_queries_are_refused(query: DpQuery, message: str) -> None:
    with pytest.raises(PrivacyParameterError, match=message):
        dp_aggregate(readings(10), query)


def test_each_subject_contributes_at_most_the_limit() -> None:
    rows = [{"n": i} for i in range(10)]
    subjects: list[str | None] = ["a"] * 6 + ["b"] * 2 + [None, None]
    kept = bound_contributions(rows, subjects, 3)
    assert [r["n"] for r in kept] == [0, 1, 2, 6, 7, 8, 9]  # records without a subject are their own
    assert bound_contributions(rows, None, 1) == rows
    with pytest.raises(PrivacyParameterError):
        bound_contributions(rows, ["a"], 1)
