"""Use and sharing decisions, for the signed data API.

``decide_use_or_sharing`` picks the stage — **sharing** when the recipient is external, an agreement
is invoked or break-glass is asked for; **use** for a city department acting on its own entitlements —
builds the input, decides and records. ``apply_decision`` then carries out the obligations on the
records the query returned; obligations that only the sharing layer can carry out (aggregate-only,
noise budget, …) come back as ``deferred`` and must be acknowledged with ``require_handled``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from governance.policy.consent import ConsentLookup
from governance.policy.enforce import EnforcementResult, Pseudonymizer, enforce
from governance.policy.errors import ObligationError
from governance.policy.model import Actor, ConsentState, Context, Decision, PolicyInput, Stage, Subject
from governance.policy.point import DecisionPoint


@dataclass(frozen=True)
class Outcome:
    stage: Stage
    input: PolicyInput
    decision: Decision


def stage_for(actor: Actor, *, agreement: str | None, break_glass: bool) -> Stage:
    """Sharing when data leaves its department's own use; use otherwise."""
    if actor.kind == "external" or agreement is not None or break_glass:
        return Stage.SHARING
    return Stage.USE


def decide_use_or_sharing(
    point: DecisionPoint,
    *,
    actor: Actor,
    purpose: str,
    dataset: str,
    fields: Sequence[str],
    time: datetime,
    agreement: str | None = None,
    subject: Subject | None = None,
    consent: ConsentState | None = None,
    break_glass: bool = False,
    channel: str = "api",
    context: Mapping[str, Any] | None = None,
) -> Outcome:
    """Decide (and record) a request of ``actor`` for ``fields`` of ``dataset`` for ``purpose`` at ``time``."""
    stage = stage_for(actor, agreement=agreement, break_glass=break_glass)
    policy_input = PolicyInput(
        stage=stage, actor=actor, purpose=purpose, dataset=dataset, fields=tuple(fields), subject=subject,
        agreement=agreement, consent=consent,
        context=Context(time=time, channel=channel, break_glass=break_glass, **dict(context or {})),
    )
    return Outcome(stage, policy_input, point.decide(policy_input))


def apply_decision(
    outcome: Outcome,
    records: Sequence[Mapping[str, Any]],
    *,
    consent: ConsentLookup | None,
    pseudonymizer: Pseudonymizer | None,
    defer: Collection[str] = ("aggregate_only", "noise_budget"),
) -> EnforcementResult:
    """Carry out an allowed decision's obligations on ``records``; only the decided fields are released.

    A deny releases nothing.
    """
    if not outcome.decision.allow:
        raise ObligationError("a denied request releases no records")
    return enforce(outcome.decision.obligations, records, consent=consent, pseudonymizer=pseudonymizer,
                   at=outcome.input.context.time, defer=defer, release=outcome.input.fields)
