"""Fixtures for the audit log: a log on the test store (SQLite and PostgreSQL), a fixed clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from tests.conftest import FIXED_NOW


class StepClock:
    """A clock that moves one second per reading, so tree head timestamps differ and are predictable."""

    def __init__(self, start: datetime = FIXED_NOW) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def audit_log(engine: Engine, data_dir: Path, clock: StepClock) -> AuditLog:
    return AuditLog.open(engine, data_dir, clock=clock)


def request(n: int, **overrides: object) -> AuditEvent:
    """A data request event, varied by ``n`` (departments, datasets, decisions, subjects)."""
    departments = ("energy", "transport", "social-care")
    datasets = ("lighting.streetlight", "monitoring.noise", "care.observation")
    values: dict[str, object] = {
        "actor": f"department:{departments[n % 3]}",
        "action": "data.request",
        "stage": "use",
        "dataset": datasets[n % 3],
        "purpose": f"purpose-{n % 2}",
        "decision": "deny" if n % 5 == 0 else "allow",
        "reasons": ["no_agreement"] if n % 5 == 0 else [],
        "policy_revision": "r-1",
        "subjects": [f"urn:ngsi-ld:Person:R-{n % 4}"] if n % 3 == 2 else [],
        "refs": {"n": n, "rows": n * 3},
    }
    values.update(overrides)
    return AuditEvent(**values)  # type: ignore[arg-type]


AppendBatches = Callable[[Sequence[int]], None]


@pytest.fixture
def fill(audit_log: AuditLog) -> AppendBatches:
    """Append batches of the given sizes (one signed tree head each), numbering events across batches."""

    def run(sizes: Sequence[int]) -> None:
        n = 0
        for size in sizes:
            audit_log.append([request(n + i) for i in range(size)])
            n += size

    return run
