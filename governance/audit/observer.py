"""The ingest pipeline's audit trail: one entry per batch and one per quarantine reason, never per record.

Entries name the adapter, counts, entity types and datasets, and SHA-256 digests over message
fingerprints (so an auditor can tie an entry to the ``ingest_message`` ledger) — never payloads, never
values. Subjects of accepted entities (their schema's subject property) go in as pseudonyms.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from adapters.base import Adapter
from governance.audit.entries import Action, AuditEvent
from governance.audit.log import AuditLog
from governance.catalog import SchemaCatalog, default_catalog
from governance.ingest.batch import Batch, IngestReport, Record

STAGE = "collection"


def fingerprints_digest(fingerprints: Iterable[str]) -> str:
    """SHA-256 over the sorted fingerprints, each followed by a newline (hex) — recomputable from the ledger."""
    ordered = sorted(fingerprints)
    if not ordered:
        return hashlib.sha256().hexdigest()
    ordered.append("")  # the last one is followed by a newline too
    return hashlib.sha256("\n".join(ordered).encode("ascii")).hexdigest()


class AuditObserver:
    """A ``BatchObserver``: writes a batch's audit entries in the batch's own transaction."""

    def __init__(self, log: AuditLog, catalog: SchemaCatalog | None = None) -> None:
        self.log = log
        self.catalog = catalog or default_catalog()

    def batch_committed(
        self, conn: Connection, adapter: Adapter, batch: Batch, report: IngestReport, now: datetime
    ) -> None:
        self.log.append(self.events(adapter, batch, report), conn=conn, now=now)

    def events(self, adapter: Adapter, batch: Batch, report: IngestReport) -> list[AuditEvent]:
        """The batch outcome, then one event per (quarantine reason, step), in that order."""
        actor = f"adapter:{adapter.name}"
        stored = [r for r in batch.records if r.active]
        rejected: dict[tuple[str, str], list[Record]] = defaultdict(list)
        for record in batch.records:
            if record.rejection is not None and not record.duplicate:
                rejected[(record.rejection.reason, record.rejection.step)].append(record)
        by_type: Counter[tuple[str, str]] = Counter()
        subjects: set[str] = set()
        known: dict[str, tuple[tuple[str, str], str | None]] = {}  # per entity type: its key and subject property
        for record in stored:
            for entity in record.entities:
                entity_type = entity.entity_type
                found = known.get(entity_type)
                if found is None:
                    schema = self.catalog.get(entity_type)
                    found = known[entity_type] = ((entity_type, schema.dataset), schema.subject_property)
                key, subject_property = found
                by_type[key] += 1
                if subject_property:
                    subject = entity.data.get(subject_property)
                    if isinstance(subject, str) and subject:
                        subjects.add(subject)
        datasets = sorted({dataset for _, dataset in by_type})
        refs: dict[str, Any] = {
            "adapter": adapter.name,
            "adapter_version": adapter.version,
            "read": report.read,
            "accepted": report.accepted,
            "quarantined": report.quarantined,
            "duplicates": report.duplicates,
            "retried": sum(1 for r in batch.records if r.retry_of is not None),
            "entities": report.entities,
            "by_type": [{"type": t, "dataset": d, "count": c} for (t, d), c in sorted(by_type.items())],
            "datasets": datasets,
            "messages_sha256": fingerprints_digest(r.fingerprint for r in batch.records),
            "stored_sha256": fingerprints_digest(r.fingerprint for r in stored),
        }
        events = [AuditEvent(
            actor=actor,
            action=Action.INGEST_BATCH,
            stage=STAGE,
            dataset=datasets[0] if len(datasets) == 1 else None,
            decision=_outcome(report),
            reasons=sorted({reason for reason, _ in rejected}),
            subjects=sorted(subjects),
            refs=refs,
        )]
        for (reason, step), records in sorted(rejected.items()):
            events.append(AuditEvent(
                actor=actor,
                action=Action.INGEST_QUARANTINE,
                stage=STAGE,
                decision="quarantined",
                reasons=[reason],
                refs={
                    "adapter": adapter.name,
                    "adapter_version": adapter.version,
                    "step": step,
                    "count": len(records),
                    "fingerprints_sha256": fingerprints_digest(r.fingerprint for r in records),
                },
            ))
        return events


def _outcome(report: IngestReport) -> str:
    if report.quarantined and report.accepted:
        return "partial"
    if report.quarantined:
        return "quarantined"
    if report.accepted:
        return "stored"
    return "duplicate" if report.duplicates else "empty"


class ConsentAuditor:
    """A consent registry observer: every grant, renewal and withdrawal as one audit entry, same transaction.

    The entry names the subject by the registry's pseudonym in ``subjects`` — the keyring's, the same the
    log writes for ingest batches and decisions, so ``citygov audit subject`` finds consent changes too —
    with the purposes, the receipt id and the new period and status. Never the real id.
    """

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def __call__(self, conn: Connection, consent: Any, kind: str, actor: str, receipt_id: str, /) -> None:
        self.log.append(
            [
                AuditEvent(
                    actor=actor,
                    action=Action.CONSENT_CHANGE,
                    purpose=",".join(consent.purposes)[:128] or None,
                    decision=kind,
                    subjects=[consent.subject],
                    refs={
                        "consent_id": consent.consent_id,
                        "controller": consent.controller,
                        "purposes": list(consent.purposes),
                        "legal_basis": consent.legal_basis,
                        "status": consent.status,
                        "valid_from": consent.valid_from.isoformat(),
                        "valid_until": consent.valid_until.isoformat() if consent.valid_until else None,
                        "receipt_id": receipt_id,
                    },
                )
            ],
            conn=conn,
        )
