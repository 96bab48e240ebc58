"""The privacy budget ledger: exact accounting, refusal once spent, no overspending under concurrency."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from governance.anonymize import tables as _tables  # noqa: F401  (registers the ledger table)
from governance.anonymize.budget import MICRO, PrivacyBudget, to_micro
from governance.errors import InvalidRequestError, QuotaExceededError
from tests.conftest import FIXED_NOW


def test_spends_add_up_exactly_and_the_last_bit_is_refused(engine: Engine) -> None:
    budget = PrivacyBudget(engine, clock=lambda: FIXED_NOW)
    for _ in range(10):
        budget.spend("dsa-x", 0.1, total=1.0)
    state = budget.state("dsa-x", total=1.0)
    assert (state.spent, state.answers, state.remaining) == (1.0, 10, 0.0)
    with pytest.raises(QuotaExceededError) as refused:
        budget.spend("dsa-x", 0.000001, total=1.0, decision_id="42")
    assert refused.value.reasons == ("privacy_budget_exhausted",) and refused.value.decision_id == "42"
    assert budget.state("dsa-x", total=1.0).answers == 10  # a refused spend is not counted
    assert budget.state("other", total=2.0).spent == 0.0  # budgets are per agreement


def test_a_raised_total_gives_room_again(engine: Engine) -> None:
    budget = PrivacyBudget(engine)
    budget.spend("dsa-y", 0.5, total=0.5)
    with pytest.raises(QuotaExceededError):
        budget.spend("dsa-y", 0.5, total=0.5)
    assert budget.spend("dsa-y", 0.5, total=1.0).spent == 1.0


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_amounts_are_refused(engine: Engine, bad: float) -> None:
    with pytest.raises(InvalidRequestError):
        PrivacyBudget(engine).spend("dsa-z", bad, total=1.0)


def test_amounts_are_rounded_up_to_millionths() -> None:
    assert to_micro(0.1) == 100_000
    assert to_micro(1e-9) == 1
    assert to_micro(0.3) * 10 == 3 * MICRO


def test_concurrent_spends_never_overspend(engine: Engine) -> None:
    budget = PrivacyBudget(engine)
    budget.spend("dsa-race", 0.01, total=1.0)  # the row exists: the race is on the update, as in production
    outcomes: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        for _ in range(5):
            try:
                budget.spend("dsa-race", 0.1, total=1.0)
                result = "spent"
            except QuotaExceededError:
                result = "refused"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("spent") == 9  # 0.01 + 9 * 0.1 = 0.91; a tenth 0.1 would be 1.01
    assert outcomes.count("refused") == 31
    state = budget.state("dsa-race", total=1.0)
    assert state.spent == pytest.approx(0.91) and state.answers == 10


def test_concurrent_first_spends_create_one_row(engine: Engine) -> None:
    budget = PrivacyBudget(engine)
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def worker() -> None:
        start.wait()
        try:
            budget.spend("dsa-new", 0.25, total=1.0)
        except QuotaExceededError:
            pass
        except BaseException as exc:  # any other error is a failure of the ledger
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert budget.state("dsa-new", total=1.0).answers == 4
