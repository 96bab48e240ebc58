"""The collection policy as a pipeline step: decide once per (batch, scope), apply per record.

A scope is (source adapter, dataset, set of fields, subject present?). The policy is evaluated once
per scope and revision and the decision is reused across batches for ``cache_seconds``; what depends
on each record — the consent of its subject — comes back as an obligation that
:func:`governance.policy.enforce.enforce` applies with one index lookup per record.

Refused records are rejected with step ``policy``. When the policy flags ``discard_payload`` (personal
data refused for want of a legal basis) or a record's subject has not consented, the raw payload is
not kept: the record goes to quarantine with an empty payload, the SHA-256 and size of what was
refused, and ``truncated`` set so that it cannot be retried (the source must send it again).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.base import Adapter
from governance.catalog import SchemaCatalog, default_catalog
from governance.ingest.batch import Batch, Record, Rejection
from governance.ingest.message import ParsedEntity
from governance.policy.consent import ConsentLookup
from governance.policy.enforce import Pseudonymizer, enforce
from governance.policy.errors import ObligationError
from governance.policy.model import Actor, Context, Decision, PolicyInput, Stage, Subject
from governance.policy.point import DecisionPoint

log = logging.getLogger(__name__)

STEP = "policy"
_PREFERRED_REASONS = ("no_legal_basis", "source_not_allowed", "consent_refused")
_HAS_DISCARD_FLAG = "discard_payload" in {f.name for f in dataclasses.fields(Rejection)}


@dataclass(frozen=True)
class Scope:
    """What a collection decision depends on — never on a record's values."""

    source: str
    dataset: str
    fields: frozenset[str]
    subject_present: bool


class DecisionCache:
    """Collection decisions by (revision, scope), each reused until it is ``ttl`` old."""

    def __init__(self, ttl: timedelta, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple[str, Hashable], tuple[datetime, PolicyInput, Decision]] = {}

    def get(self, revision: str, scope: Hashable, now: datetime) -> tuple[PolicyInput, Decision] | None:
        entry = self._entries.get((revision, scope))
        if entry is None or now - entry[0] >= self.ttl or now < entry[0]:
            self.misses += 1
            return None
        self.hits += 1
        return entry[1], entry[2]

    def put(self, revision: str, scope: Hashable, now: datetime, policy_input: PolicyInput, decision: Decision) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(revision, scope)] = (now, policy_input, decision)

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class CollectionPolicyStep:
    """The ``policy`` step of the collection pipeline (the Step protocol: ``run(adapter, batch)``)."""

    name = STEP

    def __init__(
        self,
        point: DecisionPoint,
        catalog: SchemaCatalog | None = None,
        *,
        consent: ConsentLookup | None = None,
        pseudonymizer: Pseudonymizer | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache_seconds: int = 300,
    ) -> None:
        self.point = point
        self.catalog = catalog or default_catalog()
        self.consent = consent
        self.pseudonymizer = pseudonymizer
        self.clock = clock
        self.cache = DecisionCache(timedelta(seconds=cache_seconds))
        schemas = [self.catalog.get(t) for t in self.catalog.types()]
        self._subject_of = {s.dataset: s.subject_property for s in schemas}
        self._datasets = {s.entity_type: (s.dataset, s.subject_property) for s in schemas}

    def run(self, adapter: Adapter, batch: Batch) -> None:
        now = self.clock()
        groups: dict[Scope, list[tuple[Record, ParsedEntity]]] = {}
        # the scope of an entity follows from its type and its set of fields: worked out once per
        # (type, field names in order) seen in the batch, and each entity appended to its scope's list
        # in batch order
        known: dict[tuple[str, tuple[str, ...]], list[tuple[Record, ParsedEntity]] | None] = {}
        for record in batch.active():
            for entity in record.entities:
                key = (entity.entity_type, tuple(entity.data))
                members = known.get(key, _UNSEEN)
                if members is _UNSEEN:
                    members = self._members(adapter.name, key, groups)
                    known[key] = members
                if members is None:
                    _reject(record, "unknown_entity_type", f"no schema for {entity.entity_type}", None, False)
                    break
                members.append((record, entity))
        for scope, members in groups.items():
            live = [(r, e) for r, e in members if r.active]
            if live:
                self._govern(adapter, scope, live, now)

    def _members(
        self, source: str, key: tuple[str, tuple[str, ...]], groups: dict[Scope, list[tuple[Record, ParsedEntity]]]
    ) -> list[tuple[Record, ParsedEntity]] | None:
        """The list collecting the members of the scope of entities of ``key`` (None: an unknown type)."""
        entity_type, names = key
        found = self._datasets.get(entity_type)
        if found is None:
            return None
        dataset, subject_property = found
        subject = subject_property is not None and subject_property in names
        return groups.setdefault(Scope(source, dataset, frozenset(names), subject), [])

    def _decision(self, adapter: Adapter, scope: Scope, now: datetime, count: int) -> Decision:
        revision = self.point.revision
        cached = self.cache.get(revision, scope, now)
        if cached is not None:
            policy_input, decision = cached
        else:
            policy_input = self._input(adapter, scope, now)
            decision = self.point.evaluate(policy_input)
            if decision.failure is None:  # a failed evaluation is tried again with the next batch
                self.cache.put(revision, scope, now, policy_input, decision)
        return self.point.record(policy_input, decision, cached=cached is not None, records=count)

    def _input(self, adapter: Adapter, scope: Scope, now: datetime) -> PolicyInput:
        subject = Subject(property=self._subject_of.get(scope.dataset)) if scope.subject_present else None
        return PolicyInput(
            stage=Stage.COLLECTION,
            actor=Actor(kind="source", id=scope.source),
            dataset=scope.dataset,
            fields=tuple(scope.fields),
            subject=subject,
            context=Context(time=now, channel=adapter.transport, adapter_version=adapter.version),
        )

    def _govern(self, adapter: Adapter, scope: Scope, members: list[tuple[Record, ParsedEntity]],
                now: datetime) -> None:
        decision = self._decision(adapter, scope, now, len(members))
        revision = f"policy revision {decision.revision[:12]}"
        if not decision.allow:
            reason = _main_reason(decision)
            discard = decision.has_flag("discard_payload")
            for record, _ in members:
                _reject(record, reason.code, f"{reason.detail} ({revision})", None, discard)
            return
        if not decision.obligations:
            return  # the common case: nothing to change, nothing to copy
        try:
            result = enforce(decision.obligations, [entity.data for _, entity in members], consent=self.consent,
                             pseudonymizer=self.pseudonymizer, at=now)
        except ObligationError as exc:
            for record, _ in members:
                _reject(record, "policy_obligation", f"{exc} ({revision})", None, False)
            return
        for refusal in result.refused:
            record, _ = members[refusal.index]
            _reject(record, refusal.reason, f"{refusal.detail} ({revision})", refusal.field, refusal.discard_payload)
        for index, row in zip(result.kept, result.records, strict=True):
            record, entity = members[index]
            if not record.active:
                continue
            removed = [] if entity.data.keys() <= row.keys() else [name for name in entity.data if name not in row]
            entity.data = row
            if removed:
                entity.removed_fields = tuple(sorted({*entity.removed_fields, *removed}))


_UNSEEN: Any = object()


def _main_reason(decision: Decision) -> Any:
    for code in _PREFERRED_REASONS:
        for reason in decision.reasons:
            if reason.code == code:
                return reason
    return decision.reasons[0]


def _reject(record: Record, reason: str, detail: str, field: str | None, discard: bool) -> None:
    if not record.active:
        return
    extra: dict[str, Any] = {"discard_payload": True} if discard and _HAS_DISCARD_FLAG else {}
    record.reject(Rejection(STEP, reason, detail, field, **extra))
    if discard:
        record.message = discard_payload(record.message, reason)


def discard_payload(message: Any, reason: str) -> Any:
    """The message without its payload: keeps the SHA-256 and size of what was refused, not retriable."""
    return message._replace(payload=b"", context={
        **dict(message.context),
        "original_sha256": message.context.get("original_sha256") or message.payload_sha256(),
        "original_size": message.context.get("original_size", len(message.payload)),
        "truncated": True,
        "payload_discarded": reason,
    })
