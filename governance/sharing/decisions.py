"""The decision point of the data API: the active policy bundle with the agreements register over it.

Each request takes the register as it is (one small query); equal registers give equal revisions, and
one engine is kept per revision, so a change to the register takes effect with the next request without
recompiling anything for the requests in between. Every decision goes to the audit log; the entry's
sequence number is the decision's id.

Decisions are reused for ``policy_cache_seconds`` (0: never) per revision: the key is the whole policy input
but its time (stage, actor with roles, purpose, dataset, fields, subject, agreement, consent, break-glass and
any other context), and an entry ends at the first ``valid_from``/``valid_until`` of any agreement in the
revision after it was made, whichever is sooner — the only times the policies compare the decision time
with. A failed evaluation (``failure`` set) is never kept. A reused decision is still recorded, once per
request, with the request's own input and ``cached`` set.

Inside :func:`holding_decisions` (the API runs each data query in one) the decision entries are not appended
at once: they are held, each under a placeholder id, and the API appends them in the request's one write
transaction — replay id, decision entries, request entry — then puts each entry's sequence number where its
placeholder was (result, error, signed body). A decision is acted on only in that request, and nothing of the
request leaves before that transaction commits, so a decision is never released unrecorded.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from governance.audit.decisions import decision_event
from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.config import Settings
from governance.errors import ConfigurationError
from governance.policy.bundle import (
    AGREEMENTS_DOCUMENT,
    BundleStore,
    bundle_from_files,
    compute_revision,
    overlay_agreements,
)
from governance.policy.engine import PolicyEngine, make_engine
from governance.policy.errors import PolicyBundleError
from governance.policy.model import Decision, DecisionRecord, PolicyInput
from governance.policy.point import DecisionPoint, DecisionRecorder
from governance.sharing.agreements import AgreementRegistry

KEEP_REVISIONS = 4
CACHE_ENTRIES = 4096
AGREEMENT_TIMES = ("valid_from", "valid_until")


PLACEHOLDER_PREFIX = "pending-decision-"


@dataclass
class HeldDecisions:
    """The decision entries of one request, held for its write transaction (see :func:`holding_decisions`)."""

    events: list[AuditEvent] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    """Placeholder → decision id (the entry's sequence number), once the entries are appended."""

    def hold(self, event: AuditEvent) -> str:
        placeholder = f"{PLACEHOLDER_PREFIX}{uuid.uuid4().hex}"
        self.events.append(event)
        self.placeholders.append(placeholder)
        return placeholder

    def appended(self, first_seq: int) -> None:
        """The held entries were appended from ``first_seq`` on, in order."""
        self.ids = {p: str(first_seq + i) for i, p in enumerate(self.placeholders)}

    def resolve(self, decision_id: str | None) -> str | None:
        """The decision id a placeholder stands for (any other id as it is)."""
        return self.ids.get(decision_id, decision_id) if decision_id is not None else None

    def is_placeholder(self, decision_id: str | None) -> bool:
        return decision_id in self.placeholders


_HELD: ContextVar[HeldDecisions | None] = ContextVar("citygov_held_decisions", default=None)


@contextlib.contextmanager
def holding_decisions() -> Iterator[HeldDecisions]:
    """Within this block (this thread or task), :class:`SequencedAuditor` holds decision entries instead of
    appending them; the caller must append ``held.events`` (in order, in the transaction that releases anything)
    and call ``held.appended(first_seq)``."""
    held = HeldDecisions()
    token = _HELD.set(held)
    try:
        yield held
    finally:
        _HELD.reset(token)


class SequencedAuditor:
    """A decision recorder that appends each decision to the audit log and remembers its sequence number.

    The number is kept per thread, so concurrent requests each read their own decision's. Within
    :func:`holding_decisions` the entry is held instead and the number is a placeholder.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._local = threading.local()

    def __call__(self, record: DecisionRecord, /) -> None:
        event = decision_event(record, self.log.pseudonymize)
        held = _HELD.get()
        if held is not None:
            self._local.seq = held.hold(event)
            return
        result = self.log.append([event])
        self._local.seq = str(result.first_seq)

    def take(self) -> str | None:
        seq: str | None = getattr(self._local, "seq", None)
        self._local.seq = None
        return seq


class CachingDecisionPoint(DecisionPoint):
    """A decision point of one revision that reuses its decisions (see the module docstring)."""

    def __init__(self, engine: PolicyEngine, on_decision: DecisionRecorder | None, *, ttl: timedelta,
                 boundaries: tuple[datetime, ...] | None) -> None:
        super().__init__(engine, on_decision)
        self.ttl = ttl
        self.boundaries = boundaries
        """Every agreement time of the revision, sorted; ``None`` when one cannot be read (nothing is reused)."""
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, tuple[datetime, datetime, Decision]] = {}
        self._lock = threading.Lock()

    def decide(self, policy_input: PolicyInput, *, records: int | None = None) -> Decision:
        if self.ttl <= timedelta(0) or self.boundaries is None:
            return super().decide(policy_input, records=records)
        key = _cache_key(policy_input)
        moment = policy_input.context.time
        with self._lock:
            entry = self._entries.get(key)
        if entry is not None:
            made, until, decision = entry
            if made <= moment < until:
                self.hits += 1
                return self.record(policy_input, decision, cached=True, records=records)
        self.misses += 1
        decision = self.evaluate(policy_input)
        if decision.failure is None:
            until = min([moment + self.ttl, *(b for b in self.boundaries if b > moment)])
            with self._lock:
                if len(self._entries) >= CACHE_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (moment, until, decision)
        return self.record(policy_input, decision, records=records)


def _cache_key(policy_input: PolicyInput) -> str:
    """Everything the decision may depend on but its time."""
    return policy_input.model_dump_json(exclude={"context": {"time"}})


def agreement_times(files: Mapping[str, bytes]) -> tuple[datetime, ...] | None:
    """Every ``valid_from`` and ``valid_until`` of the bundle's agreements, sorted; ``None`` if one is unreadable."""
    raw = files.get(AGREEMENTS_DOCUMENT)
    if raw is None:
        return ()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    agreements = document.get("agreements", {}) if isinstance(document, dict) else None
    if not isinstance(agreements, dict):
        return None
    times: list[datetime] = []
    for agreement in agreements.values():
        if not isinstance(agreement, dict):
            return None
        for name in AGREEMENT_TIMES:
            if name not in agreement:
                continue
            moment = _instant(agreement[name])
            if moment is None:
                return None
            times.append(moment)
    return tuple(sorted(times))


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return None if moment.tzinfo is None else moment.astimezone(UTC)


class SharingPolicy:
    """Hands out the decision point of the current (bundle + register) revision."""

    def __init__(self, settings: Settings, registry: AgreementRegistry, recorder: SequencedAuditor) -> None:
        self.settings = settings
        self.registry = registry
        self.recorder = recorder
        self._points: OrderedDict[str, DecisionPoint] = OrderedDict()
        self._revisions: dict[bytes, str] = {}
        """The register's content (canonical JSON) → the revision it makes over the base files."""
        self._lock = threading.Lock()

    def point(self) -> DecisionPoint:
        overlay = self.registry.overlay()  # read every time: another process may have changed the register
        try:
            key: bytes | None = orjson.dumps(overlay, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            key = None
        with self._lock:
            known = self._revisions.get(key) if key is not None else None
            found = self._points.get(known) if known is not None else None
            if known is not None and found is not None:
                self._points.move_to_end(known)
                return found
        # the revision is a function of the register's content (the base files are fixed): computed once for each
        files = overlay_agreements(self.registry.base_files, overlay)
        revision = compute_revision(files)
        with self._lock:
            if key is not None:
                if len(self._revisions) >= CACHE_ENTRIES:
                    self._revisions.clear()
                self._revisions[key] = revision
            found = self._points.get(revision)
            if found is not None:
                self._points.move_to_end(revision)
                return found
        try:
            bundle = bundle_from_files(files, origin="policies + agreements register")
        except PolicyBundleError as exc:
            raise ConfigurationError(f"the policy bundle with the agreements register is invalid: {exc}") from exc
        try:
            BundleStore.for_settings(self.settings).save(bundle)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot keep policy revision {bundle.short} ({exc}); its decisions could not be replayed"
            ) from exc
        point = CachingDecisionPoint(make_engine(self.settings, bundle), self.recorder,
                                     ttl=timedelta(seconds=self.settings.policy_cache_seconds),
                                     boundaries=agreement_times(files))
        with self._lock:
            self._points[revision] = point
            while len(self._points) > KEEP_REVISIONS:
                self._points.popitem(last=False)
        return point

    def take_decision_id(self) -> str | None:
        return self.recorder.take()
