"""The decision point: an engine plus the recorder every decision goes to.

The audit log wires itself in as the ``DecisionRecorder`` (``on_decision``); this package never
imports it. The recorder is called synchronously, before the decision is acted on; if it raises, the
decision cannot be audited, so it is replaced by a deny (``policy_audit_unavailable``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from governance.policy.engine import PolicyEngine
from governance.policy.model import Decision, DecisionRecord, PolicyInput

log = logging.getLogger(__name__)


class DecisionRecorder(Protocol):
    """Receives every decision with the revision that made it (a plain function will do)."""

    def __call__(self, record: DecisionRecord, /) -> None: ...


class DecisionPoint:
    """Decides through ``engine`` and hands each decision to ``on_decision``."""

    def __init__(self, engine: PolicyEngine, on_decision: DecisionRecorder | None = None) -> None:
        self.engine = engine
        self.on_decision = on_decision

    @property
    def revision(self) -> str:
        return self.engine.revision

    def evaluate(self, policy_input: PolicyInput) -> Decision:
        """The engine's decision, fail-closed, not yet recorded."""
        return self.engine.decide(policy_input)

    def record(self, policy_input: PolicyInput, decision: Decision, *, cached: bool = False,
               records: int | None = None) -> Decision:
        """Hand the decision to the recorder; a decision that cannot be recorded becomes a deny."""
        if self.on_decision is None:
            return decision
        try:
            self.on_decision(DecisionRecord(
                revision=decision.revision, stage=policy_input.stage, input=policy_input, decision=decision,
                engine=self.engine.name, cached=cached, records=records,
            ))
        except Exception as exc:
            log.exception("decision recorder failed; denying")
            return Decision.fail_closed(decision.revision, "audit_unavailable",
                                        f"the decision could not be recorded ({type(exc).__name__})")
        return decision

    def record_many(self, items: Sequence[tuple[PolicyInput, Decision, bool, int | None]]) -> list[Decision]:
        """``record`` for several decisions at once — (input, decision, cached, records) each — in one call of the
        recorder when it can take a list (``record_many``; the audit log: one append, one signed tree head).
        If they cannot be recorded, every one of them becomes a deny, as with ``record``."""
        if self.on_decision is None or not items:
            return [decision for _, decision, _, _ in items]
        records = [DecisionRecord(revision=decision.revision, stage=policy_input.stage, input=policy_input,
                                  decision=decision, engine=self.engine.name, cached=cached, records=count)
                   for policy_input, decision, cached, count in items]
        many: Callable[[Sequence[DecisionRecord]], None] | None = getattr(self.on_decision, "record_many", None)
        try:
            if many is not None:
                many(records)
            else:
                for record in records:
                    self.on_decision(record)
        except Exception as exc:
            log.exception("decision recorder failed; denying")
            return [Decision.fail_closed(decision.revision, "audit_unavailable",
                                         f"the decision could not be recorded ({type(exc).__name__})")
                    for _, decision, _, _ in items]
        return [decision for _, decision, _, _ in items]

    def decide(self, policy_input: PolicyInput, *, records: int | None = None) -> Decision:
        """Evaluate and record."""
        return self.record(policy_input, self.evaluate(policy_input), records=records)
