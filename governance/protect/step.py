"""The storage stage as a pipeline step: the storage policy decides, this step carries it out at write.

Once per batch and scope (dataset, set of fields) the storage policy is asked — with the decision cached
by policy revision like the collection step's; the decisions of all a batch's scopes are audited together, in
one append (one transaction, one signed tree head), and if they cannot be, every one of them is a deny
(``policy_audit_unavailable``) — and its obligations are applied to the whole group:

- ``retention``: each entity gets ``retain_until`` = its observation time (else its receive time) plus the
  days decided; the retention sweep deletes it after that;
- ``pseudonymize`` (recipient ``store``) and ``encrypt_at_rest``: together with the schema's protection
  plan (the floor: a policy can add protection, never remove what the schema classifies personal), the
  subject and identifiers tied to the person become pseudonyms and personal fields are sealed under the
  subject's data key (:class:`governance.protect.fieldcrypt.FieldProtector`), in one call per group. The
  schema's observation-time property is never sealed, even where ``encrypt_at_rest`` lists it: the row's
  ``observed_at`` column holds it in the clear anyway (see ``ProtectionPlan.from_schema``).

A deny, an obligation this step does not know, or a failed evaluation rejects the group's records (step
``storage``; they go to quarantine). Records of an erased subject are refused and their payload is not
kept: nothing more is stored about a person who was erased.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import repeat
from operator import add, attrgetter, itemgetter
from typing import Any

from adapters.base import Adapter
from governance.catalog import SchemaCatalog
from governance.ingest.batch import Batch, Record, Rejection, Stored
from governance.ingest.message import ParsedEntity
from governance.ingest.pipeline import observed_at_of
from governance.policy.collection import DecisionCache, discard_payload
from governance.policy.model import Actor, Context, Decision, PolicyInput, Stage, Subject
from governance.policy.point import DecisionPoint
from governance.protect.errors import ProtectionError, SubjectErasedError
from governance.protect.fieldcrypt import FieldProtector, ProtectionPlan
from governance.protect.subject_keys import KeyLookup

log = logging.getLogger(__name__)

STEP = "storage"
ACTOR = Actor(kind="service", id="store")
_KNOWN = frozenset({"retention", "pseudonymize", "encrypt_at_rest"})
_UNDECIDED = Stored(observed_at=None)
_STORED = partial(tuple.__new__, Stored)
"""``Stored`` from a tuple of its four fields, without a Python-level ``__new__`` call."""
_ENTITY = itemgetter(2)
_DATA = attrgetter("data")
Member = tuple[Record, int, ParsedEntity]
"""An entity of the batch: its record, its index in the record, the entity."""


@dataclass(frozen=True)
class StorageScope:
    dataset: str
    fields: frozenset[str]


@dataclass(frozen=True)
class StoragePlan:
    """What a storage decision means for one scope."""

    retention: timedelta | None
    protection: ProtectionPlan | None
    revision: str


class ProtectStep:
    """The ``storage`` step of the governed pipeline (the Step protocol: ``run(adapter, batch)``)."""

    name = STEP

    def __init__(
        self,
        point: DecisionPoint,
        catalog: SchemaCatalog,
        protector: FieldProtector,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache_seconds: int = 300,
    ) -> None:
        self.point = point
        self.catalog = catalog
        self.protector = protector
        self.clock = clock
        self.cache = DecisionCache(timedelta(seconds=cache_seconds))
        self._rejected = 0
        """Records this step has rejected in the batch it is running (a step runs one batch at a time, as its
        pipeline does: the listener, the CLI and retries each drive their own pipeline from one thread)."""

    def run(self, adapter: Adapter, batch: Batch) -> None:
        now = self.clock()
        groups: dict[tuple[str, frozenset[str]], list[Member]] = {}
        shapes: dict[tuple[str, tuple[str, ...]], list[Member]] = {}  # (type, keys in order) -> its group
        for record in batch.active():
            entities = record.entities
            record.stored = [_UNDECIDED] * len(entities)
            for index, entity in enumerate(entities):
                data = entity.data
                shape = (data["type"], tuple(data))  # the type as given: str() only for a shape not seen yet
                members = shapes.get(shape)
                if members is None:
                    group = (self.catalog.get(entity.entity_type).dataset, frozenset(data))
                    members = shapes[shape] = groups.setdefault(group, [])
                members.append((record, index, entity))
        keys = self._lookup(groups)
        # every member is active so far: the groups hold batch.active()'s records, and nothing rejected one since
        scopes = [(StorageScope(dataset, fields), members) for (dataset, fields), members in groups.items()]
        # every scope's decision first, recorded in one go (one audit append), then carried out group by group
        decisions = self._decisions(adapter, scopes, now)
        self._rejected = 0
        for (scope, members), decision in zip(scopes, decisions, strict=True):
            # a record with entities in several groups may have been rejected by an earlier group
            live = [m for m in members if m[0].active] if self._rejected else members
            if live:
                self._store(scope, live, keys, decision)

    def _lookup(self, groups: dict[tuple[str, frozenset[str]], list[Member]]) -> KeyLookup:
        """The subject keys of the whole batch, read in one go (nothing created): every group's subjects."""
        of = self.protector.pseudonyms.of
        subjects: set[str] = set()
        for (dataset, fields), members in groups.items():
            subject_property = self._subject_property(dataset)
            if subject_property is None or subject_property not in fields:
                continue
            values = set(map(dict.__getitem__, map(_DATA, map(_ENTITY, members)), repeat(subject_property)))
            for value in values:
                if not isinstance(value, str):
                    continue
                try:
                    subjects.add(of(value))
                except ProtectionError:
                    continue  # not an identifier: its group refuses or reports it below, as without the lookup
        return self.protector.subject_keys.lookup(subjects)

    def _store(self, scope: StorageScope, members: list[Member], keys: KeyLookup, decision: Decision) -> None:
        revision_note = f"policy revision {decision.revision[:12]}"
        rejected = self._rejected
        if not decision.allow:
            reason = decision.reasons[0] if decision.reasons else None
            code = reason.code if reason else "storage_denied"
            detail = reason.detail if reason and reason.detail else "the storage policy refused these fields"
            for record, _, _ in members:
                self._reject(record, code, f"{detail} ({revision_note})")
            return
        try:
            plan = self._plan(scope, decision)
        except ProtectionError as exc:
            for record, _, _ in members:
                self._reject(record, "storage_obligation", f"{exc} ({revision_note})")
            return
        entity_type = members[0][2].entity_type
        observed_prop = self.catalog.get(entity_type).observed_at
        times = [observed_at_of(data, observed_prop) for data in map(_DATA, map(_ENTITY, members))]
        if plan.protection is not None:
            members, times = self._protect(plan.protection, members, times, revision_note, keys)
        retention, revision = plan.retention, plan.revision
        # the columns beside ``data``, column by column: subject pseudonym, deadline, revision
        subjects: Iterable[str | None] = repeat(None)
        if plan.protection is not None:
            subjects = list(map(dict.get, map(_DATA, map(_ENTITY, members)), repeat(plan.protection.subject_property)))
            if not set(map(type, subjects)) <= {str}:
                subjects = [subject if isinstance(subject, str) else None for subject in subjects]
        deadlines: Iterable[datetime | None] = repeat(None)
        if retention is not None:
            if None in times:  # no observation time: the receive time
                deadlines = [(observed or record.message.received_at) + retention
                             for (record, _, _), observed in zip(members, times, strict=True)]
            else:
                deadlines = map(add, times, repeat(retention))
        rows = map(_STORED, zip(times, subjects, deadlines, repeat(revision)))
        if self._rejected == rejected:  # no record of this group was rejected: all still active, stored set
            for (record, index, _), row in zip(members, rows, strict=True):
                record.stored[index] = row  # type: ignore[index]  # run() set it; only a rejection clears it
            return
        for (record, index, _), row in zip(members, rows, strict=True):
            stored = record.stored
            if stored is not None and record.active:
                stored[index] = row

    def _protect(
        self,
        protection: ProtectionPlan,
        members: list[Member],
        times: list[datetime | None],
        revision_note: str,
        keys: KeyLookup,
    ) -> tuple[list[Member], list[datetime | None]]:
        subject_property = protection.subject_property
        of = self.protector.pseudonyms.of
        subjects: list[Any] = list(map(dict.get, map(_DATA, map(_ENTITY, members)), repeat(subject_property)))
        kept, kept_times = members, times
        if not (set(map(type, subjects)) <= {str} and "" not in subjects):
            kept, kept_times, subjects = [], [], []
            for member, observed in zip(members, times, strict=True):
                subject = member[2].data.get(subject_property)
                if not isinstance(subject, str) or not subject:
                    self._reject(member[0], "missing_subject",
                                 f"{member[2].entity_type} has no {subject_property} to key its protection by "
                                 f"({revision_note})", field=subject_property)
                else:
                    kept.append(member)
                    kept_times.append(observed)
                    subjects.append(subject)
        erased = keys.erased
        if erased and not erased.isdisjoint(map(of, subjects)):
            live: list[Member] = []
            live_times: list[datetime | None] = []
            for member, observed, subject in zip(kept, kept_times, subjects, strict=True):
                if of(subject) in erased:
                    self._reject(member[0], "subject_erased",
                                 "the data subject was erased; nothing more is stored about them", discard=True)
                else:
                    live.append(member)
                    live_times.append(observed)
            kept, kept_times = live, live_times
        if not kept:
            return [], []
        entities = list(map(_ENTITY, kept))
        try:
            # copy=False: these dicts are the batch's own and are replaced by the result right below
            sealed = self.protector.protect(list(map(_DATA, entities)), protection, observed_at=kept_times,
                                            known=keys.keys, copy=False)
        except SubjectErasedError:  # erased between the lookup and the write: judge the batch again next time
            for record, _, _ in kept:
                self._reject(record, "subject_erased",
                             "the data subject was erased; nothing more is stored about them", discard=True)
            return [], []
        # the entity id follows data["id"], now a pseudonym where the schema says so
        deque(map(setattr, entities, repeat("data"), sealed), maxlen=0)
        return kept, kept_times

    def _decisions(self, adapter: Adapter, scopes: list[tuple[StorageScope, list[Member]]],
                   now: datetime) -> list[Decision]:
        """The decision of each scope (cached by revision), all recorded in one call of the decision point."""
        revision = self.point.revision
        items: list[tuple[PolicyInput, Decision, bool, int | None]] = []
        for scope, members in scopes:
            key = ("storage", scope)
            cached = self.cache.get(revision, key, now)
            if cached is not None:
                policy_input, decision = cached
            else:
                subject_property = self._subject_property(scope.dataset)
                policy_input = PolicyInput(
                    stage=Stage.STORAGE,
                    actor=ACTOR,
                    dataset=scope.dataset,
                    fields=tuple(scope.fields),
                    subject=Subject(property=subject_property) if subject_property in scope.fields else None,
                    context=Context(time=now, channel=adapter.transport, form="raw"),
                )
                decision = self.point.evaluate(policy_input)
                if decision.failure is None:
                    self.cache.put(revision, key, now, policy_input, decision)
            items.append((policy_input, decision, cached is not None, len(members)))
        return self.point.record_many(items)

    def _reject(self, record: Record, reason: str, detail: str, *, field: str | None = None,
                discard: bool = False) -> None:
        """``_reject``, counted (a group whose records were all kept skips the checks for rejected ones)."""
        if record.active:
            self._rejected += 1
        _reject(record, reason, detail, field=field, discard=discard)

    def _subject_property(self, dataset: str) -> str | None:
        for entity_type in self.catalog.types():
            schema = self.catalog.get(entity_type)
            if schema.dataset == dataset:
                return schema.subject_property
        return None

    def _plan(self, scope: StorageScope, decision: Decision) -> StoragePlan:
        unknown = {o.kind for o in decision.obligations} - _KNOWN
        if unknown:
            raise ProtectionError(f"the storage step cannot carry out obligations {sorted(unknown)}; nothing stored")
        days = [o.days for o in decision.obligations if o.kind == "retention"]
        retention = timedelta(days=min(days)) if days else None
        encrypt: set[str] = set()
        pseudonymize: set[str] = set()
        for obligation in decision.obligations:
            if obligation.kind == "encrypt_at_rest":
                encrypt.update(obligation.fields)
            elif obligation.kind == "pseudonymize":
                if obligation.recipient != "store":
                    raise ProtectionError("stored records are pseudonymized for recipient 'store' only")
                pseudonymize.update(obligation.fields)
        subject_property = self._subject_property(scope.dataset)
        floor = None
        observed: str | None = None
        for entity_type in self.catalog.types():
            schema = self.catalog.get(entity_type)
            if schema.dataset == scope.dataset:
                floor = ProtectionPlan.from_schema(schema)
                observed = schema.observed_at
                break
        if floor is None and not (encrypt or pseudonymize):
            return StoragePlan(retention, None, decision.revision)
        if subject_property is None:
            raise ProtectionError(f"dataset {scope.dataset} has no data subject to key encryption by")
        if floor is not None:
            encrypt |= floor.encrypt
            pseudonymize |= floor.pseudonymize
        pseudonymize.discard(subject_property)
        encrypt -= pseudonymize | {subject_property, "id", "type"}
        # the observation time stays in the clear even where an encrypt_at_rest obligation lists it: the row's
        # observed_at column holds it in the clear anyway (see ProtectionPlan.from_schema)
        if observed is not None:
            encrypt.discard(observed)
        protection = ProtectionPlan(subject_property=subject_property, encrypt=frozenset(encrypt),
                                    pseudonymize=frozenset(pseudonymize))
        return StoragePlan(retention, protection, decision.revision)


def _reject(record: Record, reason: str, detail: str, *, field: str | None = None, discard: bool = False) -> None:
    if not record.active:
        return
    record.reject(Rejection(STEP, reason, detail, field, discard_payload=discard))
    if discard:
        record.message = discard_payload(record.message, reason)
