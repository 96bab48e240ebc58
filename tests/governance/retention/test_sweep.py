"""The retention sweep on SQLite and PostgreSQL: batches, counts, one audit entry, aggregates, the schedule."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from governance.audit.log import AuditLog
from governance.audit.query import EntryFilter, find_entries
from governance.config import Settings
from governance.retention.sweeper import AGGREGATE, ENTITY, QUARANTINE, SweepReport, run_periodically, status, sweep
from governance.retention.wipe import truncate_wal
from governance.store.db import create_db_engine, init_schema
from tests.conftest import FIXED_NOW
from tests.governance.retention.support import entity_row, insert, quarantine_row

NOW = FIXED_NOW + timedelta(days=400)
PSN = "psn:v1:" + "a" * 52


def expired_by(rows: list[dict[str, Any]], key: str, now: datetime = NOW) -> Counter[str]:
    return Counter(r[key] for r in rows if r["retain_until"] is not None and r["retain_until"] < now)


def counts(engine: Engine, column: Any) -> dict[str, int]:
    with engine.connect() as conn:
        return {str(k): int(n) for k, n in conn.execute(select(column, func.count()).group_by(column))}


def sweep_entries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [e.fields for e in find_entries(conn, EntryFilter(action="retention.sweep"))]


@pytest.fixture
def mixed(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    past, future = NOW - timedelta(days=1), NOW + timedelta(hours=1)
    entities = (
        [entity_row(n, retain_until=past - timedelta(minutes=n)) for n in range(7)]
        + [entity_row(10 + n, retain_until=future) for n in range(2)]
        + [entity_row(20 + n, dataset="care.alert", entity_type="Alert", subject=PSN, retain_until=past)
           for n in range(3)]
        + [entity_row(30 + n, retain_until=None) for n in range(2)]
    )
    quarantined = ([quarantine_row(n, retain_until=past) for n in range(4)]
                   + [quarantine_row(10, retain_until=future), quarantine_row(11, adapter="ttn-v3")])
    insert(engine, entities, quarantined)
    return entities, quarantined


def test_expired_rows_go_in_batches_with_one_audit_entry_per_run(
    engine: Engine, settings: Settings, mixed: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    entities, quarantined = mixed
    seen: list[tuple[str, int]] = []
    report = sweep(engine, settings, now=NOW, batch_size=3, rules={}, progress=lambda p, n: seen.append((p, n)))

    assert report.entities == expired_by(entities, "dataset") and report.entities["lighting.streetlight"] == 7
    assert report.quarantine == expired_by(quarantined, "adapter")
    assert report.aggregates == Counter() and report.summarized == Counter()
    kept = Counter(r["dataset"] for r in entities) - expired_by(entities, "dataset")
    assert counts(engine, ENTITY.c.dataset) == dict(kept)
    assert counts(engine, QUARANTINE.c.adapter) == dict(Counter(q["adapter"] for q in quarantined)
                                                        - expired_by(quarantined, "adapter"))
    assert sum(n for _, n in seen) == report.total and all(n <= 3 for _, n in seen)
    assert report.batches == len(seen) == 4 + 2 + 1  # 10 entity rows, 4 quarantine rows, no aggregates

    [entry] = sweep_entries(engine)
    assert entry["seq"] == report.audit_seq and entry["decision"] == "deleted" and entry["stage"] == "storage"
    assert entry["refs"]["entities"] == dict(report.entities) and entry["refs"]["quarantine"] == dict(report.quarantine)
    assert entry["refs"]["datasets"] == sorted(report.entities) and entry["subjects"] == []

    again = sweep(engine, settings, now=NOW, batch_size=3, rules={})
    assert again.total == 0 and again.batches == 3
    assert [e["decision"] for e in sweep_entries(engine)] == ["deleted", "nothing_expired"]


def test_a_dry_run_counts_and_writes_nothing(
    engine: Engine, settings: Settings, mixed: tuple[list[dict[str, Any]], list[dict[str, Any]]]
) -> None:
    entities, quarantined = mixed
    before = counts(engine, ENTITY.c.dataset), counts(engine, QUARANTINE.c.adapter)
    AuditLog.open(engine, settings.data_dir, settings=settings)
    report = sweep(engine, settings, now=NOW, dry_run=True, rules={"care.alert": 1825})
    assert report.dry_run and report.batches == 0 and report.audit_seq is None
    assert report.entities == expired_by(entities, "dataset")
    assert report.quarantine == expired_by(quarantined, "adapter")
    assert report.summarized == Counter({"care.alert": report.entities["care.alert"]})
    assert (counts(engine, ENTITY.c.dataset), counts(engine, QUARANTINE.c.adapter)) == before
    assert sweep_entries(engine) == []


def test_aggregated_datasets_keep_hourly_summaries_merged_across_runs(engine: Engine, settings: Settings) -> None:
    hour = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    lights = [entity_row(n, observed_at=hour + timedelta(minutes=5 * n), retain_until=hour + timedelta(minutes=5 * n),
                         data={"id": "x", "type": "Streetlight", "powerConsumption": float((n * 37) % 11),
                               "illuminanceLevel": n % 4, "on": True})
              for n in range(10)]
    care = [entity_row(50 + n, dataset="care.observation", entity_type="ResidentObservation", subject=PSN,
                       entity_id="psn:v1:" + "b" * 52, observed_at=hour + timedelta(minutes=n),
                       retain_until=hour + timedelta(minutes=n), data={"numValue": 72 + n, "refResident": PSN})
            for n in range(4)]
    insert(engine, lights + care)
    rules = {"lighting.streetlight": 3650, "care.observation": 730}

    first = sweep(engine, settings, now=hour + timedelta(minutes=22), batch_size=4, rules=rules)
    second = sweep(engine, settings, now=hour + timedelta(hours=2), batch_size=4, rules=rules)
    assert first.summarized + second.summarized == Counter({"lighting.streetlight": 10, "care.observation": 4})
    assert first.summarized["lighting.streetlight"] == 5  # the hour was split between the two runs

    with engine.connect() as conn:
        stored = [dict(r._mapping) for r in conn.execute(select(AGGREGATE))]
    by_key = {(r["dataset"], r["entity_id"], r["property"]): r for r in stored}
    for entity_id in {r["entity_id"] for r in lights}:
        mine = [r for r in lights if r["entity_id"] == entity_id]
        assert by_key[("lighting.streetlight", entity_id, "")]["samples"] == len(mine)
        for name in ("powerConsumption", "illuminanceLevel"):
            values = [float(r["data"][name]) for r in mine]
            cell = by_key[("lighting.streetlight", entity_id, name)]
            assert (cell["samples"], cell["sum_value"], cell["min_value"], cell["max_value"]) == (
                len(values), sum(values), min(values), max(values))
        assert ("lighting.streetlight", entity_id, "on") not in by_key  # booleans are not numbers here
    care_rows = [r for r in stored if r["dataset"] == "care.observation"]
    assert [(r["entity_id"], r["property"], r["samples"]) for r in care_rows] == [("", "", len(care))]
    assert all(r["sum_value"] is None for r in care_rows)  # a person's values never outlive the raw rows

    later = sweep(engine, settings, now=hour + timedelta(days=731), rules=rules)
    assert later.aggregates == Counter({"care.observation": 1})
    assert counts(engine, AGGREGATE.c.dataset) == {"lighting.streetlight": len(stored) - 1}


def test_status_says_how_many_rows_expire_when(engine: Engine) -> None:
    deadlines = [NOW - timedelta(days=2), NOW + timedelta(hours=3), NOW + timedelta(days=3), NOW + timedelta(days=20),
                 NOW + timedelta(days=200), NOW + timedelta(days=900), None]
    insert(engine, [entity_row(n, retain_until=d) for n, d in enumerate(deadlines)],
           [quarantine_row(1, retain_until=NOW + timedelta(hours=1))])
    shown = status(engine, now=NOW)
    assert shown["entities"]["lighting.streetlight"] == {
        "rows": 7, "no_deadline": 1, "expired": 1, "within_1d": 1, "within_7d": 2, "within_30d": 3,
        "within_365d": 4, "later": 1, "next": (NOW + timedelta(hours=3)).isoformat(),
        "last": (NOW + timedelta(days=900)).isoformat(),
    }
    assert shown["quarantine"]["care-hub"]["within_1d"] == 1 and shown["aggregates"] == {}


def test_run_periodically_sweeps_until_stopped(engine: Engine, settings: Settings) -> None:
    insert(engine, [entity_row(n, retain_until=NOW - timedelta(days=1)) for n in range(3)])
    stop = threading.Event()
    reports: list[SweepReport] = []

    def seen(report: SweepReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    worker = threading.Thread(target=run_periodically, args=(engine, settings),
                              kwargs={"stop": stop, "interval": timedelta(milliseconds=10), "clock": lambda: NOW,
                                      "on_report": seen})
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert [r.total for r in reports] == [3, 0]
    assert len(sweep_entries(engine)) == 2


def test_sqlite_keeps_no_bytes_of_swept_rows(tmp_path: Path, data_dir: Path) -> None:
    """Deleted rows are zeroed in the database file and the write-ahead log is emptied of their old pages.

    (Some SQLite builds zero deleted content by default; the sweep asks for it explicitly, for all builds.)
    """
    path = tmp_path / "wipe.db"
    wal = path.with_name(path.name + "-wal")
    engine = create_db_engine(f"sqlite:///{path}")
    init_schema(engine)
    config = Settings(data_dir=data_dir, database_url=f"sqlite:///{path}")
    in_file, in_log = "confidential-marker-4471", "confidential-marker-9902"
    insert(engine, [entity_row(n, source=in_file, retain_until=NOW - timedelta(days=1)) for n in range(50)]
           + [entity_row(100, retain_until=None)])
    truncate_wal(engine)
    insert(engine, [entity_row(200 + n, source=in_log, retain_until=NOW - timedelta(days=1)) for n in range(20)])

    assert in_file.encode() in path.read_bytes() and in_log.encode() in wal.read_bytes()
    sweep(engine, config, now=NOW, rules={})
    on_disk = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert in_file.encode() not in on_disk and in_log.encode() not in on_disk
    engine.dispose()
