"""The privacy budget ledger: how much epsilon each agreement's differentially private answers have used.

A spend is one transaction: make sure the agreement's row exists, then one conditional ``UPDATE … SET
spent = spent + cost WHERE spent + cost <= total``. PostgreSQL re-checks the condition on the locked row
and SQLite serializes writers, so two concurrent requests can never both pass on the last bit of budget.
Epsilon is kept in millionths (each spend rounded up), so a hundred spends of 0.01 add up to exactly 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from governance.anonymize.tables import PrivacyBudgetRecord
from governance.errors import InvalidRequestError, QuotaExceededError
from governance.sharing.reader import release_shared

MICRO = 1_000_000
_TABLE: Table = PrivacyBudgetRecord.__table__  # type: ignore[attr-defined]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_micro(epsilon: float) -> int:
    """Epsilon in millionths, rounded up (a spend never counts for less than it is)."""
    if not (isinstance(epsilon, int | float) and math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidRequestError("epsilon must be a finite, non-negative number")
    return int((Decimal(repr(float(epsilon))) * MICRO).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class BudgetState:
    agreement_id: str
    total: float
    spent: float
    answers: int

    @property
    def remaining(self) -> float:
        return max(0.0, (to_micro(self.total) - to_micro(self.spent)) / MICRO)


def insert_missing(conn: Connection, table: Table, values: dict[str, Any]) -> None:
    """Insert a row unless its primary key is taken (both dialects, no error and no race)."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        conn.execute(sqlite.insert(table).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - create_db_engine accepts only these two
        raise InvalidRequestError(f"unsupported database {dialect}")


class PrivacyBudget:
    """Per-agreement epsilon accounting in the database."""

    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    def spend(self, agreement_id: str, epsilon: float, *, total: float,
              decision_id: str | None = None) -> BudgetState:
        """Take ``epsilon`` from the agreement's budget of ``total``, or raise ``QuotaExceededError``."""
        cost = to_micro(epsilon)
        limit = to_micro(total)
        if cost <= 0:
            raise InvalidRequestError("a differentially private answer spends a positive epsilon")
        now = self.clock()
        release_shared(self.engine)  # never wait for this connection while holding the request's reads' one
        with self.engine.begin() as conn:
            insert_missing(conn, _TABLE, {"agreement_id": agreement_id, "spent_micro": 0, "answers": 0,
                                          "updated_at": now})
            done = conn.execute(
                update(_TABLE)
                .where(_TABLE.c.agreement_id == agreement_id, _TABLE.c.spent_micro + cost <= limit)
                .values(spent_micro=_TABLE.c.spent_micro + cost, answers=_TABLE.c.answers + 1, updated_at=now)
            )
            row = conn.execute(select(_TABLE.c.spent_micro, _TABLE.c.answers)
                               .where(_TABLE.c.agreement_id == agreement_id)).one()
        state = BudgetState(agreement_id, total, row.spent_micro / MICRO, int(row.answers))
        if done.rowcount != 1:
            raise QuotaExceededError(
                f"the privacy budget of agreement {agreement_id} is spent: {state.remaining:g} of {total:g} left, "
                f"this answer needs {cost / MICRO:g}",
                reasons=("privacy_budget_exhausted",), decision_id=decision_id,
            )
        return state

    def state(self, agreement_id: str, *, total: float) -> BudgetState:
        with self.engine.connect() as conn:
            row = conn.execute(select(_TABLE.c.spent_micro, _TABLE.c.answers)
                               .where(_TABLE.c.agreement_id == agreement_id)).first()
        if row is None:
            return BudgetState(agreement_id, total, 0.0, 0)
        return BudgetState(agreement_id, total, row.spent_micro / MICRO, int(row.answers))
