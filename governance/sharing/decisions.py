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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from governance.audit.decisions import decision_event
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


class SequencedAuditor:
    """A decision recorder that appends each decision to the audit log and remembers its sequence number.

    The number is kept per thread, so concurrent requests each read their own decision's.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._local = threading.local()

    def __call__(self, record: DecisionRecord, /) -> None:
        result = self.log.append([decision_event(record, self.log.pseudonymize)])
        self._local.seq = result.first_seq

    def take(self) -> int | None:
        seq: int | None = getattr(self._local, "seq", None)
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
        self._lock = threading.Lock()

    def point(self) -> DecisionPoint:
        files = overlay_agreements(self.registry.base_files, self.registry.overlay())
        revision = compute_revision(files)
        with self._lock:
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
        seq = self.recorder.take()
        return None if seq is None else str(seq)
