"""The collection pipeline: dedup → parse → validate → quality → store, with quarantine.

Every record ends in exactly one place — stored, quarantined, or counted as a duplicate — and each
batch is written in one transaction, so a crash never leaves half a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from adapters.base import Adapter
from governance.catalog import EntitySchema, SchemaCatalog, default_catalog
from governance.config import Settings
from governance.ingest.batch import Batch, IngestReport, Record
from governance.ingest.gc_pause import collection_paused
from governance.ingest.message import RawMessage
from governance.ingest.quality import QualityRunner, default_suites
from governance.ingest.steps import ParseStep, QualityStep, Step, ValidateStep
from governance.ingest.timeparse import parse_instant
from governance.protect.errors import SubjectErasedError
from governance.protect.quarantine import redacted_source
from governance.store import entities, ledger, quarantine

if TYPE_CHECKING:
    from governance.protect.quarantine import QuarantineVault

log = logging.getLogger(__name__)

#: Records in the first batch of an ingest, before the feed's entities per record are known.
FIRST_BATCH_RECORDS = 1_000

Clock = Callable[[], datetime]


class BatchObserver(Protocol):
    """Told about every committed batch, inside its transaction (the audit log hooks in here).

    Whatever it writes through ``conn`` commits or rolls back together with the batch itself.
    """

    def batch_committed(
        self, conn: Connection, adapter: Adapter, batch: Batch, report: IngestReport, now: datetime
    ) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


_RUNNER: QualityRunner | None = None


def shared_quality_runner() -> QualityRunner:
    """One Great Expectations context per process, however many pipelines run."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = QualityRunner(default_suites())
    return _RUNNER


class Pipeline:
    """Runs batches of raw messages of one adapter through the steps and into the store."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        catalog: SchemaCatalog | None = None,
        steps: Sequence[Step] | None = None,
        clock: Clock = utc_now,
        observers: Sequence[BatchObserver] = (),
        quarantine_vault: QuarantineVault | None = None,
    ) -> None:
        self.engine = engine
        self.observers = list(observers)
        self.vault = quarantine_vault
        self.settings = settings
        self.catalog = catalog or default_catalog()
        self.clock = clock
        if steps is None:
            built: list[Step] = [ParseStep(settings.max_payload_bytes), ValidateStep(self.catalog)]
            if settings.quality_checks:
                built.append(QualityStep(shared_quality_runner()))
            steps = built
        self.steps = list(steps)

    def ingest(
        self,
        adapter: Adapter,
        messages: Iterable[RawMessage],
        *,
        batch_size: int | None = None,
        on_batch: Callable[[IngestReport], None] | None = None,
    ) -> IngestReport:
        """Stream ``messages`` through the pipeline in batches of about ``batch_size`` entities (default
        ``CITYGOV_BATCH_SIZE``); return the totals.

        Records are cut into batches before they are parsed, so a batch is a number of records: the first
        holds at most :data:`FIRST_BATCH_RECORDS`, each later one as many as give ``batch_size`` entities at
        the entities per stored record seen so far. A lighting cabinet's message holds ~20 lamps and a
        care-hub event one observation; batches of equal entity counts keep memory bounded alike for both.
        """
        entities = batch_size or self.settings.batch_size
        total = IngestReport()
        iterator = iter(messages)
        size = min(entities, FIRST_BATCH_RECORDS)
        while True:
            with collection_paused():  # reading a batch keeps it alive too; the collector runs between
                chunk = list(islice(iterator, size))
                if not chunk:
                    break
                report = self.run_batch(adapter, [Record(m, m.fingerprint(adapter.name)) for m in chunk])
            total.add(report)
            if on_batch is not None:
                on_batch(report)
            size = records_per_batch(entities, total)
        return total

    def run_batch(self, adapter: Adapter, records: list[Record]) -> IngestReport:
        """Process one batch and commit it. A concurrent writer of the same message is a duplicate."""
        with collection_paused():
            return self._run_batch(adapter, records)

    def _run_batch(self, adapter: Adapter, records: list[Record]) -> IngestReport:
        for attempt in (1, 2):
            batch = Batch(records)
            self._mark_duplicates(adapter, batch)
            for step in self.steps:
                step.run(adapter, batch)
            try:
                return self._write(adapter, batch)
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("another writer stored part of this batch first; re-checking duplicates")
                for record in records:
                    record.duplicate = False
                    record.rejection = None
                    record.entities = []
                    record.stored = None
        raise AssertionError("unreachable")

    def _mark_duplicates(self, adapter: Adapter, batch: Batch) -> None:
        fresh = [r for r in batch.records if r.retry_of is None]
        with self.engine.connect() as conn:
            known = ledger.known_fingerprints(conn, (r.fingerprint for r in fresh))
        seen: set[str] = set()
        for record in fresh:
            if record.fingerprint in known or record.fingerprint in seen:
                record.duplicate = True
            seen.add(record.fingerprint)

    def _write(self, adapter: Adapter, batch: Batch) -> IngestReport:
        now = self.clock()
        report = IngestReport(read=len(batch.records))
        ledger_rows: list[dict[str, Any]] = []
        entity_rows: list[dict[str, Any]] = []
        quarantine_rows: list[dict[str, Any]] = []
        resolved: list[Record] = []
        failed_again: list[Record] = []
        hints: dict[int, str | None] = {}
        schemas: dict[Any, EntitySchema] = {}  # per batch: entity types repeat
        types: list[Any] = []
        adapter_name, adapter_version = adapter.name, adapter.version
        if self.vault is not None and self.vault.applies_to(adapter):
            for record in batch.records:
                if record.rejection is not None and not record.duplicate and record.retry_of is None \
                        and record.message.payload:
                    hints[id(record)] = adapter.subject_hint(record.message)
            self.vault.prepare({hint for hint in hints.values() if hint is not None})
        for record in batch.records:
            message = record.message
            if record.duplicate:
                report.duplicates += 1
                continue
            if record.rejection is not None:
                report.quarantined += 1
                report.by_reason[record.rejection.reason] += 1
                if record.retry_of is not None:
                    failed_again.append(record)
                else:
                    quarantine_rows.append(self._quarantine_row(adapter, record, now, hints.get(id(record))))
                    if not record.rejection.discard_payload:
                        ledger_rows.append(_ledger_row(adapter, record, "quarantined"))
                continue
            report.accepted += 1
            raw_sha256 = message.payload_sha256()
            stored = record.stored
            source = message.source[:512]
            received_at = message.received_at
            fingerprint = record.fingerprint
            for index, parsed in enumerate(record.entities):
                data = parsed.data
                entity_type = data["type"]
                schema = schemas.get(entity_type)
                if schema is None:
                    schema = schemas[entity_type] = self.catalog.get(str(entity_type))
                types.append(entity_type)
                meta = stored[index] if stored is not None else None
                entity_rows.append(
                    {
                        "entity_id": str(data["id"]),
                        "entity_type": str(entity_type),
                        "dataset": schema.dataset,
                        "observed_at": meta.observed_at if meta else observed_at_of(data, schema.observed_at),
                        "subject": meta.subject if meta else None,
                        "retain_until": meta.retain_until if meta else None,
                        "policy_revision": meta.policy_revision if meta else None,
                        "data": data,
                        "adapter": adapter_name,
                        "adapter_version": adapter_version,
                        "source": source,
                        "received_at": received_at,
                        "stored_at": now,
                        "raw_sha256": raw_sha256,
                        "message_fingerprint": fingerprint,
                        "removed_fields": list(parsed.removed_fields),
                    }
                )
            if record.retry_of is not None:
                resolved.append(record)
            else:
                ledger_rows.append(_ledger_row(adapter, record, "stored", len(record.entities)))
        report.entities = len(types)
        report.by_type.update(map(str, types))
        with self.engine.begin() as conn:
            texts: dict[Any, dict[Any, Any]] = {}  # times converted once for both tables
            ledger.add_messages(conn, ledger_rows, memo=texts)
            entities.add_entities(conn, entity_rows, memo=texts)
            quarantine.add_quarantined(conn, quarantine_rows)
            for record in resolved:
                assert record.retry_of is not None
                ledger.set_status(conn, record.fingerprint, "stored", len(record.entities))
                quarantine.mark_resolved(conn, record.retry_of, now)
            for record in failed_again:
                assert record.retry_of is not None and record.rejection is not None
                rejection = record.rejection
                quarantine.mark_failed_again(
                    conn, record.retry_of, step=rejection.step, reason=rejection.reason,
                    detail=rejection.detail[:2000], field=rejection.field,
                )
            for observer in self.observers:
                observer.batch_committed(conn, adapter, batch, report, now)
        return report

    def _quarantine_row(self, adapter: Adapter, record: Record, now: datetime,
                        hint: str | None = None) -> dict[str, Any]:
        message = record.message
        rejection = record.rejection
        assert rejection is not None
        kept = message.payload[: self.settings.max_payload_bytes]
        truncated = len(message.payload) > self.settings.max_payload_bytes or bool(message.context.get("truncated"))
        context = dict(message.context)
        source = message.source
        topic = message.topic
        sealed = False
        subject = None
        retain_until = None
        if self.vault is not None and self.vault.applies_to(adapter):
            retain_until = now + self.vault.retention
            source = redacted_source(message)
            if not kept:
                topic = None  # the topic names the device: kept only sealed, with a payload
            else:
                try:
                    result = self.vault.seal(kept, record.fingerprint, topic=topic, subject_id=hint)
                    kept, subject, topic, sealed = result.blob, result.subject, None, True
                except SubjectErasedError:  # nothing more is kept about an erased person
                    kept, topic, truncated = b"", None, True
                    context["payload_discarded"] = "subject_erased"
        return {
            "fingerprint": record.fingerprint,
            "adapter": adapter.name,
            "adapter_version": adapter.version,
            "config_ref": adapter.config_ref,
            "source": source[:512],
            "topic": topic[:1024] if topic else None,
            "context": context,
            "received_at": message.received_at,
            "quarantined_at": now,
            "step": rejection.step,
            "reason": rejection.reason,
            "detail": rejection.detail[:2000],
            "field": rejection.field[:256] if rejection.field else None,
            "payload": kept,
            "payload_size": int(message.context.get("original_size", len(message.payload))),
            "payload_sha256": str(message.context.get("original_sha256") or message.payload_sha256()),
            "payload_truncated": truncated,
            "status": "open",
            "attempts": 1,
            "sealed": sealed,
            "subject": subject,
            "retain_until": retain_until,
        }


def _ledger_row(adapter: Adapter, record: Record, status: str, count: int = 0) -> dict[str, Any]:
    return {
        "fingerprint": record.fingerprint,
        "adapter": adapter.name,
        "status": status,
        "received_at": record.message.received_at,
        "entity_count": count,
    }


def observed_at_of(data: dict[str, Any], prop: str | None) -> datetime | None:
    """The store's ``observed_at`` of an entity: its schema's observation-time property, parsed."""
    if prop is None or prop not in data:
        return None
    value = data[prop]
    if value.__class__ is str:
        # adapters write UTC text ("…Z"), which Python reads as it is: what parse_instant gives for it
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is UTC:
            return moment
    try:
        return parse_instant(value, field=prop, zone=None)
    except Exception:  # the schema already checked the format; never fail a store on this
        return None


def records_per_batch(entities: int, so_far: IngestReport) -> int:
    """Records for a batch of about ``entities`` entities, at the entities per stored record ``so_far``
    (one per record until a record has been stored)."""
    per_record = so_far.entities / so_far.accepted if so_far.accepted else 1.0
    return max(1, int(entities / max(1.0, per_record)))
