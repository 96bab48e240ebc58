"""Replaying a recorded decision against the revision that made it.

A decision is a pure function of (revision, input), so an auditor can load the stored bundle of the
recorded revision, evaluate the recorded input on the embedded engine and compare. A decision that
was a fail-closed engine failure (``failure`` set) cannot be reproduced by design: it is reported as
not matching, with the decision the policy gives now.
"""

from __future__ import annotations

from dataclasses import dataclass

from governance.policy.bundle import BundleStore
from governance.policy.embedded import EmbeddedEngine
from governance.policy.model import Decision, DecisionRecord


@dataclass(frozen=True)
class Replay:
    matches: bool
    recorded: Decision
    replayed: Decision
    note: str


def replay(record: DecisionRecord, store: BundleStore) -> tuple[bool, Decision]:
    """``(matches, new_decision)`` for ``record``, evaluated on its recorded revision."""
    result = replay_record(record, store)
    return result.matches, result.replayed


def replay_record(record: DecisionRecord, store: BundleStore) -> Replay:
    bundle = store.load(record.revision)
    if record.input.stage != record.stage:
        raise ValueError(f"record stage {record.stage} disagrees with its input's stage {record.input.stage}")
    replayed = EmbeddedEngine(bundle).decide(record.input)
    if record.decision.failure is not None:
        note = (f"the recorded decision was a fail-closed {record.decision.failure}; "
                f"the policy now {'allows' if replayed.allow else 'denies'}")
        return Replay(False, record.decision, replayed, note)
    if replayed.failure is not None:
        return Replay(False, record.decision, replayed, f"replay failed ({replayed.failure})")
    matches = replayed.outcome() == record.decision.outcome() and replayed.revision == record.decision.revision
    note = "the decision matches" if matches else "the decision differs from the recorded one"
    return Replay(matches, record.decision, replayed, note)
