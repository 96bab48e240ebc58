"""The retention sweep: delete what the storage decision said to keep only until ``retain_until``.

Every stored entity row and every quarantine row of a personal-data feed carries ``retain_until``, set at
write from the storage policy's ``retention`` obligation. The sweep deletes the rows whose deadline has
passed — oldest deadline first, ``batch_size`` rows per transaction, so memory stays flat and locks stay
short on tables of millions of rows — and writes **one** ``retention.sweep`` audit entry per run, with the
counts per dataset and per quarantine adapter, in the transaction of the run's last batch.

Aggregate instead of delete: where the retention document (``policies/data/retention.json``) gives a
dataset an ``aggregate`` form, the raw rows are summarized into hourly rows of ``entity_aggregate`` in the
same transaction that deletes them (observation count; count, sum, minimum and maximum of each numeric
property, per observed thing), and those aggregates are kept for the ``aggregate`` days. Datasets with a data
subject keep observation counts per hour only: no entity, no value — nothing personal outlives the raw rows.
A run that aggregates part of an hour and a later run that deletes the rest merge into the same rows.

Rows without a deadline (written before protection, or by a pipeline without the storage step) are kept;
``status`` counts them. A dry run counts what would go and writes nothing — not even an audit entry: it
changes nothing and reads no personal data. A run killed between batches leaves the batches it committed
without an entry (the rows were past their deadline); a run that fails with an error records what it did
with decision ``interrupted``. On SQLite deleted rows are zeroed and the write-ahead log truncated
(:mod:`governance.retention.wipe`).

For a long-running service, :func:`run_periodically` runs the sweep every
``CITYGOV_RETENTION_INTERVAL_SECONDS`` until told to stop.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Table, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from governance.audit.entries import Action, AuditEvent
from governance.audit.log import AuditLog
from governance.catalog import SchemaCatalog, default_catalog
from governance.config import Settings
from governance.errors import CitygovError, ConfigurationError
from governance.retention.tables import EntityAggregate
from governance.retention.wipe import secure_delete, truncate_wal
from governance.store.entities import as_utc
from governance.store.tables import EntityRecord, QuarantineRecord

log = logging.getLogger(__name__)

ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]
QUARANTINE = QuarantineRecord.__table__  # type: ignore[attr-defined]
AGGREGATE = EntityAggregate.__table__  # type: ignore[attr-defined]
ACTOR = "system:retention"
Phase = Literal["entities", "quarantine", "aggregates"]
PHASES: tuple[Phase, ...] = ("entities", "quarantine", "aggregates")
ProgressCallback = Callable[[Phase, int], None]
"""Told after each batch: which table, and how many rows the batch deleted."""
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SweepReport:
    """What a sweep deleted (or, in a dry run, would delete)."""

    now: datetime
    dry_run: bool
    entities: Counter[str] = field(default_factory=Counter)
    """Dataset → entity rows deleted."""
    quarantine: Counter[str] = field(default_factory=Counter)
    """Adapter → quarantine rows deleted."""
    summarized: Counter[str] = field(default_factory=Counter)
    """Dataset → raw rows summarized into hourly aggregates before they were deleted."""
    aggregates: Counter[str] = field(default_factory=Counter)
    """Dataset → aggregate rows deleted because they expired in their turn."""
    batches: int = 0
    audit_seq: int | None = None

    @property
    def total(self) -> int:
        return sum(self.entities.values()) + sum(self.quarantine.values()) + sum(self.aggregates.values())

    @property
    def entities_deleted(self) -> int:
        return sum(self.entities.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "dry_run": self.dry_run,
            "entities": dict(sorted(self.entities.items())),
            "quarantine": dict(sorted(self.quarantine.items())),
            "summarized": dict(sorted(self.summarized.items())),
            "aggregates": dict(sorted(self.aggregates.items())),
            "total": self.total,
            "batches": self.batches,
            "audit_seq": self.audit_seq,
        }

    def event(self, decision: str, batch_size: int) -> AuditEvent:
        datasets = sorted(set(self.entities) | set(self.aggregates))
        return AuditEvent(
            actor=ACTOR,
            action=Action.RETENTION_SWEEP,
            stage="storage",
            dataset=datasets[0] if len(datasets) == 1 else None,
            decision=decision,
            refs={
                "before": self.now.isoformat(),
                "entities": dict(sorted(self.entities.items())),
                "quarantine": dict(sorted(self.quarantine.items())),
                "summarized": dict(sorted(self.summarized.items())),
                "aggregates": dict(sorted(self.aggregates.items())),
                "datasets": datasets,
                "total": self.total,
                "batches": self.batches,
                "batch_size": batch_size,
            },
        )


def aggregate_rules(settings: Settings) -> dict[str, int]:
    """Dataset → days its hourly aggregates are kept, for datasets the retention document keeps aggregated."""
    from governance.policy.bundle import active_bundle

    document = active_bundle(settings, store=False).data.get("city", {}).get("retention", {})
    rules: dict[str, int] = {}
    for dataset, forms in (document.get("datasets") or {}).items():
        days = forms.get("aggregate") if isinstance(forms, Mapping) else None
        if isinstance(days, int) and days > 0:
            rules[str(dataset)] = days
    return rules


def sweep(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
    audit: AuditLog | None = None,
    rules: Mapping[str, int] | None = None,
    catalog: SchemaCatalog | None = None,
) -> SweepReport:
    """Delete every row past its ``retain_until`` (as of ``now``), summarizing where the policy says so.

    ``rules`` (dataset → aggregate days) defaults to the active policy's retention document.
    """
    moment = _utc(now or utc_now())
    size = batch_size or settings.retention_batch_size
    if size < 1:
        raise ConfigurationError("the retention batch size must be at least 1")
    if dry_run:
        return expired(engine, now=moment, rules=aggregate_rules(settings) if rules is None else rules)
    rules = aggregate_rules(settings) if rules is None else dict(rules)
    personal = _subject_datasets(catalog or default_catalog())
    log_ = audit or AuditLog.open(engine, settings.data_dir, settings=settings)
    report = SweepReport(now=moment, dry_run=False)
    try:
        for phase in PHASES:
            while True:
                with engine.begin() as conn:
                    secure_delete(conn)
                    deleted = _delete_batch(conn, phase, moment, size, rules, personal, report)
                    report.batches += 1
                    done = deleted < size
                    if done and phase == PHASES[-1]:
                        appended = log_.append([report.event("deleted" if report.total else "nothing_expired",
                                                             size)], conn=conn, now=moment)
                        report.audit_seq = appended.first_seq
                if progress is not None:
                    progress(phase, deleted)
                if done:
                    break
    except (CitygovError, SQLAlchemyError):
        if report.total:
            with contextlib.suppress(CitygovError, SQLAlchemyError):
                log_.append([report.event("interrupted", size)], now=moment)
        raise
    if report.total:
        truncate_wal(engine)
    log.info("retention sweep deleted %d rows in %d batches", report.total, report.batches,
             extra={"component": "retention", "entities": dict(report.entities),
                    "quarantine": dict(report.quarantine), "aggregates": dict(report.aggregates)})
    return report


def expired(engine: Engine, *, now: datetime, rules: Mapping[str, int] | None = None) -> SweepReport:
    """What a sweep at ``now`` would delete: counts only (the dry run)."""
    moment = _utc(now)
    report = SweepReport(now=moment, dry_run=True)
    with engine.connect() as conn:
        report.entities.update(_expired_by(conn, ENTITY, ENTITY.c.dataset, moment))
        report.quarantine.update(_expired_by(conn, QUARANTINE, QUARANTINE.c.adapter, moment))
        report.aggregates.update(_expired_by(conn, AGGREGATE, AGGREGATE.c.dataset, moment))
    report.summarized.update({d: n for d, n in report.entities.items() if d in (rules or {})})
    return report


def status(engine: Engine, *, now: datetime | None = None) -> dict[str, Any]:
    """How many rows expire when, per dataset (entities, aggregates) and per adapter (quarantine)."""
    moment = _utc(now or utc_now())
    with engine.connect() as conn:
        return {
            "now": moment.isoformat(),
            "entities": _schedule(conn, ENTITY, ENTITY.c.dataset, moment),
            "quarantine": _schedule(conn, QUARANTINE, QUARANTINE.c.adapter, moment),
            "aggregates": _schedule(conn, AGGREGATE, AGGREGATE.c.dataset, moment),
        }


def run_periodically(
    engine: Engine,
    settings: Settings,
    *,
    stop: threading.Event,
    interval: timedelta | None = None,
    clock: Clock = utc_now,
    on_report: Callable[[SweepReport], None] | None = None,
) -> None:
    """Sweep now and then every ``interval`` (default ``settings.retention_interval_seconds``) until ``stop``.

    Meant for a thread of ``citygov serve``. A failed sweep is logged and tried again at the next interval
    (whatever it committed stays done; the next run deletes the rest).
    """
    wait = (interval or timedelta(seconds=settings.retention_interval_seconds)).total_seconds()
    audit: AuditLog | None = None
    while not stop.is_set():
        try:
            audit = audit or AuditLog.open(engine, settings.data_dir, settings=settings)
            report = sweep(engine, settings, now=clock(), audit=audit)
        except (CitygovError, SQLAlchemyError) as exc:
            log.error("retention sweep failed; trying again in %d s: %s", wait, type(exc).__name__,
                      extra={"component": "retention", "error": type(exc).__name__})
        else:
            if on_report is not None:
                on_report(report)
        stop.wait(wait)


# -- internals -------------------------------------------------------------------------------------


def _delete_batch(
    conn: Connection,
    phase: Phase,
    now: datetime,
    size: int,
    rules: Mapping[str, int],
    personal: frozenset[str],
    report: SweepReport,
) -> int:
    if phase == "entities":
        rows = conn.execute(
            delete(ENTITY)
            .where(ENTITY.c.pk.in_(_oldest(ENTITY, now, size)))
            .returning(ENTITY.c.dataset, ENTITY.c.entity_type, ENTITY.c.entity_id, ENTITY.c.subject,
                       ENTITY.c.observed_at, ENTITY.c.received_at, ENTITY.c.data)
        ).all()
        report.entities.update(row.dataset for row in rows)
        summary = [row for row in rows if row.dataset in rules]
        if summary:
            _write_aggregates(conn, summarize(summary, rules, personal, now))
            report.summarized.update(row.dataset for row in summary)
        return len(rows)
    if phase == "quarantine":
        adapters = conn.execute(
            delete(QUARANTINE).where(QUARANTINE.c.pk.in_(_oldest(QUARANTINE, now, size)))
            .returning(QUARANTINE.c.adapter)
        ).scalars().all()
        report.quarantine.update(adapters)
        return len(adapters)
    datasets = conn.execute(
        delete(AGGREGATE).where(AGGREGATE.c.pk.in_(_oldest(AGGREGATE, now, size))).returning(AGGREGATE.c.dataset)
    ).scalars().all()
    report.aggregates.update(datasets)
    return len(datasets)


def _oldest(table: Table, now: datetime, size: int) -> Any:
    return (
        select(table.c.pk)
        .where(table.c.retain_until.is_not(None), table.c.retain_until < now)
        .order_by(table.c.retain_until)
        .limit(size)
        .scalar_subquery()
    )


AggregateKey = tuple[str, str, str, datetime, str]
"""(dataset, entity type, entity id or "", hour, property or "")."""


@dataclass
class _Cell:
    retain_until: datetime
    samples: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, value: float | None) -> None:
        self.samples += 1
        if value is not None:
            self.total += value
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)


def summarize(
    rows: Sequence[Any], rules: Mapping[str, int], personal: frozenset[str], now: datetime
) -> list[dict[str, Any]]:
    """Hourly aggregate rows of ``rows`` (deleted entity rows with dataset, type, id, subject, times, data)."""
    cells: dict[AggregateKey, _Cell] = {}

    def add(key: AggregateKey, value: float | None, until: datetime) -> None:
        cells.setdefault(key, _Cell(until)).add(value)

    for row in rows:
        instant = as_utc(row.observed_at) or as_utc(row.received_at)
        if instant is None:
            continue
        hour = instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        until = hour + timedelta(days=rules[row.dataset])
        anonymous = row.dataset in personal or row.subject is not None
        entity_id = "" if anonymous else str(row.entity_id)
        add((row.dataset, row.entity_type, entity_id, hour, ""), None, until)
        if anonymous or not isinstance(row.data, Mapping):
            continue  # datasets with a data subject: counts only, never a value
        for name, value in row.data.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name not in ("id", "type"):
                add((row.dataset, row.entity_type, entity_id, hour, str(name)[:128]), float(value), until)
    return [
        {"dataset": key[0], "entity_type": key[1], "entity_id": key[2], "hour": key[3], "property": key[4],
         "samples": cell.samples, "sum_value": cell.total if key[4] else None, "min_value": cell.low,
         "max_value": cell.high, "retain_until": cell.retain_until, "updated_at": now}
        for key, cell in cells.items()
    ]


def _write_aggregates(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert, or merge into the rows an earlier sweep wrote for the same hour (one statement per row set)."""
    postgres = conn.dialect.name == "postgresql"
    stmt = pg_insert(AGGREGATE) if postgres else sqlite_insert(AGGREGATE)
    least, greatest = (func.least, func.greatest) if postgres else (func.min, func.max)
    new = stmt.excluded
    upsert = stmt.on_conflict_do_update(
        index_elements=["dataset", "entity_type", "entity_id", "hour", "property"],
        set_={
            "samples": AGGREGATE.c.samples + new.samples,
            "sum_value": AGGREGATE.c.sum_value + new.sum_value,
            "min_value": least(AGGREGATE.c.min_value, new.min_value),
            "max_value": greatest(AGGREGATE.c.max_value, new.max_value),
            "retain_until": greatest(AGGREGATE.c.retain_until, new.retain_until),
            "updated_at": new.updated_at,
        },
    )
    conn.execute(upsert, rows)


def _expired_by(conn: Connection, table: Table, key: Any, now: datetime) -> dict[str, int]:
    query = select(key, func.count()).where(table.c.retain_until < now).group_by(key)
    return {str(k): int(n) for k, n in conn.execute(query)}


def _schedule(conn: Connection, table: Table, key: Any, now: datetime) -> dict[str, dict[str, Any]]:
    deadline = table.c.retain_until
    pending = deadline >= now

    def within(delta: timedelta) -> Any:
        return func.count().filter(pending, deadline < now + delta)

    query = select(
        key,
        func.count(),
        func.count().filter(deadline.is_(None)),
        func.count().filter(deadline < now),
        within(timedelta(days=1)),
        within(timedelta(days=7)),
        within(timedelta(days=30)),
        within(timedelta(days=365)),
        func.min(deadline).filter(pending),
        func.max(deadline),
    ).group_by(key).order_by(key)
    out: dict[str, dict[str, Any]] = {}
    for name, rows, kept, past, day, week, month, year, first, last in conn.execute(query):
        out[str(name)] = {
            "rows": int(rows), "no_deadline": int(kept), "expired": int(past), "within_1d": int(day),
            "within_7d": int(week), "within_30d": int(month), "within_365d": int(year),
            "later": int(rows) - int(kept) - int(past) - int(year),
            "next": _iso(first), "last": _iso(last),
        }
    return out


def _subject_datasets(catalog: SchemaCatalog) -> frozenset[str]:
    return frozenset(catalog.get(t).dataset for t in catalog.types() if catalog.get(t).subject_property)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ConfigurationError("the sweep's time must carry a time zone")
    return moment.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value is not None else None
