"""Every policy decision into the audit log, with what is needed to replay it — and no personal data.

The decision's input goes into the entry's references with the subject id replaced by the log's
pseudonym; policies decide on classes of data and on consent obligations, never on who a subject is,
so the pseudonymized input replays to the same decision (``citygov policy replay SEQ``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from governance.audit.entries import Action, AuditEvent
from governance.audit.log import AuditLog
from governance.policy.model import DecisionRecord


class DecisionAuditor:
    """A ``DecisionRecorder`` that appends one ``policy.decision`` entry per decision, synchronously."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def __call__(self, record: DecisionRecord, /) -> None:
        self.log.append([decision_event(record, self.log.pseudonymize)])

    def record_many(self, records: Sequence[DecisionRecord], /) -> None:
        """Several decisions in one append (one transaction, one signed tree head), in order."""
        self.log.append([decision_event(record, self.log.pseudonymize) for record in records])


def decision_event(record: DecisionRecord, pseudonymize: Any) -> AuditEvent:
    """The audit event of one decision (its input with the subject pseudonymized)."""
    policy_input = record.input.model_dump(mode="json")
    subjects: list[str] = []
    subject = policy_input.get("subject")
    if isinstance(subject, dict) and subject.get("id"):
        subjects.append(str(subject["id"]))
        subject["id"] = pseudonymize(str(subject["id"]))
    decision = record.decision
    actor = record.input.actor
    return AuditEvent(
        actor=f"{actor.kind}:{actor.id}",
        action=Action.POLICY_DECISION,
        stage=str(record.stage),
        dataset=record.input.dataset,
        purpose=record.input.purpose,
        decision="allow" if decision.allow else "deny",
        reasons=[reason.code for reason in decision.reasons],
        policy_revision=record.revision,
        subjects=subjects,
        refs={
            "input": policy_input,
            "decision": decision.model_dump(mode="json"),
            "engine": record.engine,
            "cached": record.cached,
            "records": record.records,
        },
    )


def record_from_entry(entry: dict[str, Any]) -> DecisionRecord:
    """Rebuild the decision record of a ``policy.decision`` audit entry, for replay."""
    refs = entry.get("refs") or {}
    if entry.get("action") != Action.POLICY_DECISION or "input" not in refs or "decision" not in refs:
        raise ValueError(f"audit entry #{entry.get('seq')} is not a policy decision")
    return DecisionRecord.model_validate({
        "revision": entry["policy_revision"],
        "stage": entry["stage"],
        "input": refs["input"],
        "decision": refs["decision"],
        "engine": refs.get("engine"),
        "cached": bool(refs.get("cached")),
        "records": refs.get("records"),
    })
