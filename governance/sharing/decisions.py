"""The decision point of the data API: the active policy bundle with the agreements register over it.

Each request takes the register as it is (one small query); equal registers give equal revisions, and
one engine is kept per revision, so a change to the register takes effect with the next request without
recompiling anything for the requests in between. Every decision goes to the audit log; the entry's
sequence number is the decision's id.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from governance.audit.decisions import decision_event
from governance.audit.log import AuditLog
from governance.config import Settings
from governance.errors import ConfigurationError
from governance.policy.bundle import BundleStore, bundle_from_files, compute_revision, overlay_agreements
from governance.policy.engine import make_engine
from governance.policy.errors import PolicyBundleError
from governance.policy.model import DecisionRecord
from governance.policy.point import DecisionPoint
from governance.sharing.agreements import AgreementRegistry

KEEP_REVISIONS = 4


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
        point = DecisionPoint(make_engine(self.settings, bundle), on_decision=self.recorder)
        with self._lock:
            self._points[revision] = point
            while len(self._points) > KEEP_REVISIONS:
                self._points.popitem(last=False)
        return point

    def take_decision_id(self) -> str | None:
        seq = self.recorder.take()
        return None if seq is None else str(seq)
