"""The request quota of an agreement: requests per UTC day, counted atomically in the database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, Table, select, update

from governance.anonymize.budget import insert_missing
from governance.errors import QuotaExceededError
from governance.sharing.reader import release_shared
from governance.sharing.tables import AgreementUsage

_TABLE: Table = AgreementUsage.__table__  # type: ignore[attr-defined]


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


class RequestQuota:
    """``take`` counts one request under an agreement, unless the day's quota is used up."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def take(self, agreement_id: str, limit: int, at: datetime, *, decision_id: str | None = None) -> int:
        """Count a request on ``at``'s UTC day; return the day's count, or raise ``QuotaExceededError``."""
        day = day_of(at)
        release_shared(self.engine)  # never wait for this connection while holding the request's reads' one
        with self.engine.begin() as conn:
            insert_missing(conn, _TABLE, {"agreement_id": agreement_id, "day": day, "requests": 0})
            done = conn.execute(
                update(_TABLE)
                .where(_TABLE.c.agreement_id == agreement_id, _TABLE.c.day == day, _TABLE.c.requests < limit)
                .values(requests=_TABLE.c.requests + 1)
            )
            used = int(conn.execute(select(_TABLE.c.requests).where(
                _TABLE.c.agreement_id == agreement_id, _TABLE.c.day == day)).scalar_one())
        if done.rowcount != 1:
            raise QuotaExceededError(
                f"agreement {agreement_id} allows {limit} requests a day; today's are used up (UTC day {day})",
                reasons=("request_quota_exceeded",), decision_id=decision_id,
            )
        return used

    def used(self, agreement_id: str, at: datetime) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(select(_TABLE.c.requests).where(
                _TABLE.c.agreement_id == agreement_id, _TABLE.c.day == day_of(at))).scalar_one_or_none()
        return int(found or 0)
