"""Several decisions recorded in one audit append (the storage step's batch), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select

from governance.audit.decisions import DecisionAuditor
from governance.audit.log import AuditLog
from governance.audit.tables import AuditEntryRow, AuditHeadRow, AuditTreeHeadRow
from governance.audit.verify import verify_log
from governance.policy.model import (
    Actor,
    Context,
    Decision,
    DecisionRecord,
    PolicyInput,
    Reason,
    Stage,
    Subject,
)
from governance.policy.point import DecisionPoint
from tests.conftest import FIXED_NOW

ENTRY = AuditEntryRow.__table__  # type: ignore[attr-defined]
HEAD = AuditHeadRow.__table__  # type: ignore[attr-defined]
TREE_HEAD = AuditTreeHeadRow.__table__  # type: ignore[attr-defined]


def _input(n: int) -> PolicyInput:
    return PolicyInput(
        stage=Stage.STORAGE, actor=Actor(kind="service", id="storage"), dataset=f"care.set-{n}",
        fields=("id", "numValue", "refResident"),
        subject=Subject(id=f"urn:ngsi-ld:Person:R-{n}") if n % 2 else Subject(property="refResident"),
        context=Context(time=FIXED_NOW + timedelta(seconds=n), channel="mqtt", form="raw"),
    )


def _decision(n: int) -> Decision:
    return Decision(allow=n != 1, reasons=(Reason(code="no_consent", detail="d"),) if n == 1 else (),
                    revision=f"rev-{n}")


def _records(count: int) -> list[DecisionRecord]:
    return [DecisionRecord(revision=f"rev-{n}", stage=Stage.STORAGE, input=_input(n), decision=_decision(n),
                           engine="test", cached=n == 2, records=10 + n) for n in range(count)]


def _state(engine: Engine) -> tuple[int, int, list[dict[str, Any]]]:
    """Appends so far, tree heads so far, the entries (without their place in the log) in order."""
    with engine.connect() as conn:
        appends = conn.execute(select(HEAD.c.appends)).scalar_one()
        heads = conn.execute(select(func.count()).select_from(TREE_HEAD)).scalar_one()
        entries = [orjson.loads(e) for e in conn.execute(select(ENTRY.c.entry).order_by(ENTRY.c.seq)).scalars()]
    for entry in entries:
        entry.pop("seq", None)
        entry.pop("time", None)
    return int(appends), int(heads), entries


def test_decisions_recorded_together_are_one_append_with_the_same_entries(engine: Engine,
                                                                          audit_log: AuditLog) -> None:
    auditor = DecisionAuditor(audit_log)
    records = _records(4)
    audit_log.sign_tree_head()
    appends0, heads0, _ = _state(engine)
    for record in records:  # as before: one append per decision
        auditor(record)
    appends1, heads1, one_by_one = _state(engine)
    assert (appends1 - appends0, heads1 - heads0, len(one_by_one)) == (4, 4, 4)
    auditor.record_many(records)  # now: one append for all
    appends2, heads2, entries = _state(engine)
    assert (appends2 - appends1, heads2 - heads1) == (1, 1)
    assert entries[4:] == one_by_one  # same fields, same order
    assert [e["refs"]["records"] for e in entries[4:]] == [10, 11, 12, 13]
    assert [e["decision"] for e in entries[4:]] == ["allow", "deny", "allow", "allow"]
    assert "urn:ngsi-ld:Person:R-1" not in orjson.dumps(entries).decode()  # subjects pseudonymized as before
    report = verify_log(engine, audit_log.public_key)
    assert report.entries == 8


def test_the_point_hands_a_batch_to_the_recorder_in_one_call(engine: Engine, audit_log: AuditLog) -> None:
    point = DecisionPoint(engine=_StubEngine(), on_decision=DecisionAuditor(audit_log))
    items = [(_input(n), _decision(n), n == 2, 10 + n) for n in range(3)]
    appends0, _, _ = _state(engine)
    out = point.record_many(items)
    assert out == [_decision(n) for n in range(3)]
    appends1, _, entries = _state(engine)
    assert appends1 - appends0 == 1
    assert [(e["dataset"], e["refs"]["cached"], e["refs"]["engine"]) for e in entries] == [
        ("care.set-0", False, "stub"), ("care.set-1", False, "stub"), ("care.set-2", True, "stub")]


def test_a_plain_function_recorder_gets_each_decision_in_order() -> None:
    seen: list[DecisionRecord] = []
    point = DecisionPoint(engine=_StubEngine(), on_decision=seen.append)
    items = [(_input(n), _decision(n), False, n) for n in range(3)]
    assert point.record_many(items) == [_decision(n) for n in range(3)]
    assert [r.input.dataset for r in seen] == ["care.set-0", "care.set-1", "care.set-2"]
    assert DecisionPoint(engine=_StubEngine()).record_many(items) == [_decision(n) for n in range(3)]
    assert point.record_many([]) == []


class _Failing:
    def __call__(self, record: DecisionRecord, /) -> None:
        raise AssertionError("not called one by one")

    def record_many(self, records: Any, /) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("recorder", [_Failing(), lambda record: (_ for _ in ()).throw(OSError("disk full"))])
def test_a_batch_that_cannot_be_recorded_is_all_denied(recorder: Any) -> None:
    point = DecisionPoint(engine=_StubEngine(), on_decision=recorder)
    out = point.record_many([(_input(n), _decision(n), False, n) for n in range(3)])
    assert len(out) == 3
    for n, decision in enumerate(out):
        assert not decision.allow and decision.failure == "audit_unavailable"
        assert decision.reasons[0].code == "policy_audit_unavailable" and decision.revision == f"rev-{n}"


class _StubEngine:
    name = "stub"
    revision = "rev-stub"

    def decide(self, policy_input: PolicyInput) -> Decision:
        return Decision(allow=True, revision=self.revision)
