"""What an audit entry says: the event a caller records, and the canonical JSON object the log stores.

Entries hold references — counts, hashes, names of datasets and purposes — never personal data. A data
subject appears only as its pseudonym (HMAC-SHA256 under the log's subject key), written by the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

import orjson

from governance.audit.errors import InvalidAuditEventError

ENTRY_VERSION = 1
STAGES = frozenset({"collection", "storage", "use", "sharing"})
ENTRY_FIELDS = (
    "v", "seq", "time", "actor", "action", "stage", "dataset", "purpose", "decision", "reasons",
    "policy_revision", "subjects", "refs",
)
_LIMITS = {"actor": 256, "action": 64, "decision": 64, "stage": 16, "dataset": 128, "purpose": 128,
           "policy_revision": 128}


class Action:
    """The actions citygov writes (free-form dotted names are allowed; these are the ones in use)."""

    INGEST_BATCH = "ingest.batch"
    INGEST_QUARANTINE = "ingest.quarantine"
    POLICY_DECISION = "policy.decision"
    DATA_REQUEST = "data.request"
    AUTH_FAILED = "auth.failed"
    CONSENT_CHANGE = "consent.change"
    POLICY_CHANGE = "policy.change"
    RETENTION_SWEEP = "retention.sweep"
    ERASURE = "erasure"


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened, as a caller reports it.

    ``subjects`` are raw subject ids (an entity's subject property, e.g. ``urn:ngsi-ld:Person:R-1``):
    the log replaces them by pseudonyms before anything is written. ``refs`` carries references only
    (counts, hashes, names); ``time`` defaults to the append's clock.
    """

    actor: str
    action: str
    stage: str | None = None
    dataset: str | None = None
    purpose: str | None = None
    decision: str | None = None
    reasons: Sequence[str] = ()
    policy_revision: str | None = None
    subjects: Sequence[str] = ()
    refs: Mapping[str, Any] = field(default_factory=dict)
    time: datetime | None = None

    def check(self) -> None:
        for name in ("actor", "action"):
            if not getattr(self, name):
                raise InvalidAuditEventError(f"an audit event needs a non-empty {name}")
        for name, limit in _LIMITS.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                raise InvalidAuditEventError(f"audit event {name} must be a string of at most {limit} characters")
        if self.stage is not None and self.stage not in STAGES:
            raise InvalidAuditEventError(f"unknown stage {self.stage!r}; one of {sorted(STAGES)}")
        if isinstance(self.reasons, str) or not all(isinstance(r, str) for r in self.reasons):
            raise InvalidAuditEventError("reasons must be a list of strings")
        if isinstance(self.subjects, str) or not all(isinstance(s, str) and s for s in self.subjects):
            raise InvalidAuditEventError("subjects must be a list of non-empty subject ids")
        if not isinstance(self.refs, Mapping):
            raise InvalidAuditEventError("refs must be an object")


def build_entry(event: AuditEvent, seq: int, time_text: str, pseudonyms: Sequence[str]) -> dict[str, Any]:
    """The JSON object of one entry (canonicalized by the log before hashing)."""
    return {
        "v": ENTRY_VERSION,
        "seq": seq,
        "time": time_text,
        "actor": event.actor,
        "action": event.action,
        "stage": event.stage,
        "dataset": event.dataset,
        "purpose": event.purpose,
        "decision": event.decision,
        "reasons": list(event.reasons),
        "policy_revision": event.policy_revision,
        "subjects": sorted(set(pseudonyms)),
        "refs": dict(event.refs),
    }


@dataclass(frozen=True)
class StoredEntry:
    """An entry read back: its exact bytes (what the Merkle tree covers) and its leaf hash."""

    seq: int
    data: bytes
    leaf_hash: bytes

    @cached_property
    def fields(self) -> dict[str, Any]:
        value = orjson.loads(self.data)
        if not isinstance(value, dict):
            raise ValueError("an audit entry is a JSON object")
        return value

    def as_json(self) -> dict[str, Any]:
        """For ``--json`` output and the API: the entry's fields plus its leaf hash."""
        return {**self.fields, "leaf_hash": self.leaf_hash.hex()}


def touched_datasets(fields: Mapping[str, Any]) -> set[str]:
    """Datasets an entry is about: its ``dataset`` and, for events over several, ``refs.datasets``."""
    found: set[str] = set()
    if isinstance(fields.get("dataset"), str):
        found.add(fields["dataset"])
    refs = fields.get("refs")
    if isinstance(refs, Mapping) and isinstance(refs.get("datasets"), list):
        found.update(d for d in refs["datasets"] if isinstance(d, str))
    return found
