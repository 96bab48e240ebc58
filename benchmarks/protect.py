"""Protection benchmark: ingest with the storage step on versus off, retention sweep rate, erasure time.

    .venv/bin/python -m benchmarks.protect                      # SQLite and PostgreSQL, defaults below
    .venv/bin/python -m benchmarks.protect --records 20000 --erase-records 100000 --database sqlite

Targets (issue 5): protection costs <= 25 % of ingest throughput; the sweep rate (rows deleted per second)
and the time to erase a subject with 100,000 records are reported.

* **protection on/off**: the care-hub feed (generated city days, every resident consenting, as the demo does;
  a warm-up feed of the same residents ingested first and its rows deleted, so their keys exist as in a
  running city) through the governed pipeline — once with ``CITYGOV_PROTECTION`` off (collection policy, audit, no
  storage step) and once on (storage decision, pseudonyms, AES-GCM per subject, retention deadlines, sealed
  quarantine), each into a fresh database, alternating, ``--repeats`` times. ``cost`` is the target's measure:
  the share of the ingest throughput the protection takes, ``1 - on records/s / off records/s`` over the
  median times (a pipeline that ingests 20,000 records/s unprotected and 15,000 protected: 25 %).
  ``slowdown`` is the same two medians as time added, ``on / off - 1`` (that pipeline: 33 %): the larger
  figure, given next to it. Both runs pay everything else the same way, so these are the protection's share.
  ``cost_us_per_record`` is the difference in µs per record (it does not move when the rest of the pipeline
  gets faster, the ratios do); ``off_runs`` / ``on_runs`` are the single runs, to show the spread;
  ``cpu_cost`` / ``cpu_slowdown`` are the same over this process's CPU seconds (steadier on a shared machine;
  without the PostgreSQL server's share). On SQLite each timed run starts with an empty write-ahead log and ends with a
  checkpoint (``*_checkpoint_seconds``, included), so both arms pay for the pages they wrote in proportion
  (see ``ingest_once``).
* **ablation** (``--ablation``, off by default): where the protection cost goes. Besides ``off`` and ``on``, the
  same feed runs (alternating, ``--repeats`` times) through storage steps with parts of the issue's
  requirements taken out — benchmark-only subclasses of the step, never used by the product:
  ``no-sealing`` (no AES-GCM field encryption; pseudonyms, deadlines and the subject column stay),
  ``no-columns`` (everything, but rows written without the ``subject``, ``retain_until`` and
  ``policy_revision`` columns and so without their index entries), ``skeleton`` (neither: the storage decision,
  the subject's pseudonym and key lookup, the step's bookkeeping). Each arm's ``cost`` and ``slowdown`` are
  taken against ``off`` as above, and ``us_per_record`` is its median minus ``off``'s; ``on``'s minus a
  variant's is what that part of the requirements costs.
* **sweep**: ``--sweep-records`` expired entity rows (retain_until in the past) written directly, then
  ``governance.retention.sweep`` deletes them in batches; rows/s.
* **erasure**: one subject with ``--erase-records`` stored (sealed) observations among others; the time of
  ``governance.subject.erase`` — crypto-shredding plus deleting the rows.

Results to stdout and, with ``--out DIR``, JSON in ``DIR/protect-<db>.json``. Not a test: numbers go to
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, insert

from adapters.base import Adapter, adapter_class
from benchmarks.ingest import database, empty_tables, generate, machine, make_pipeline, read
from governance.catalog import default_catalog
from governance.config import Settings
from governance.ingest.batch import Stored
from governance.ingest.pipeline import Pipeline
from governance.policy.model import Decision
from governance.protect.fieldcrypt import FieldProtector
from governance.protect.step import Member, ProtectStep, StoragePlan, StorageScope
from governance.protect.subject_keys import KeyLookup
from governance.store.db import create_db_engine, init_schema
from governance.store.tables import EntityRecord

FEED = "care-hub"
_ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)


def _checkpoint(engine: Engine) -> None:
    """SQLite: move the write-ahead log into the database file and empty it (nothing to do on PostgreSQL)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()


class AblatedStep(ProtectStep):
    """The storage step with parts of the requirements left out (``--ablation`` only; see the module docstring)."""

    def __init__(self, step: ProtectStep, *, seal: bool, columns: bool, pseudonyms: bool) -> None:
        super().__init__(step.point, step.catalog, step.protector, clock=step.clock)
        self.seal, self.columns, self.pseudonyms = seal, columns, pseudonyms

    def _plan(self, scope: StorageScope, decision: Decision) -> StoragePlan:
        plan = super()._plan(scope, decision)
        protection = plan.protection
        if protection is None:
            return plan
        if not self.seal:
            protection = replace(protection, encrypt=frozenset())
        if not self.pseudonyms:  # the subject stays a pseudonym: the data keys are looked up by it
            protection = replace(protection, pseudonymize=frozenset())
        return replace(plan, protection=protection)

    def _store(self, scope: StorageScope, members: list[Member], keys: KeyLookup, decision: Decision) -> None:
        super()._store(scope, members, keys, decision)
        if self.columns:
            return
        for record, index, _ in members:
            stored = record.stored
            if stored is not None and record.active:
                stored[index] = Stored(observed_at=stored[index].observed_at)


VARIANTS: dict[str, dict[str, bool]] = {
    "no-sealing": {"seal": False, "columns": True, "pseudonyms": True},
    "no-columns": {"seal": True, "columns": False, "pseudonyms": True},
    "skeleton": {"seal": False, "columns": False, "pseudonyms": False},
}
"""The ablation's storage steps: what each leaves out."""


def _ablate(pipeline: Pipeline, variant: str) -> None:
    options = VARIANTS[variant]
    pipeline.steps = [AblatedStep(step, **options) if isinstance(step, ProtectStep) else step
                      for step in pipeline.steps]


def governed_run(url: str, data_dir: Path, records_file: Any, *, protection: bool, variant: str | None = None,
                 ) -> tuple[Settings, Engine, Pipeline, Adapter]:
    """What one run ingests with: settings, an engine on ``url`` with the tables in place, the governed pipeline
    (its storage step ablated as ``variant`` says) and the care-hub adapter configured for ``records_file``."""
    settings = Settings(data_dir=data_dir, database_url=url, protection=protection)
    engine = create_db_engine(url)
    init_schema(engine)
    pipeline = make_pipeline(engine, settings, FEED, governed=True)
    if variant is not None:
        _ablate(pipeline, variant)
    return settings, engine, pipeline, adapter_class(FEED).from_config_file(records_file.config)


def ingest_once(kind: str, workdir: Path, records_file: Any, *, protection: bool, label: str,
                warm: Any = None, variant: str | None = None) -> tuple[float, int, float, float]:
    """Seconds to ingest the feed into a fresh database, the entities stored, this process's CPU seconds, and
    the seconds of the closing WAL checkpoint (SQLite; included in the first and third figure).

    With ``warm``, that feed is ingested first and the stored rows deleted: the residents' keys exist then, as
    they do in a running city (a subject's key is made once, on its first record), and caches are warm.

    SQLite: the run starts with an empty write-ahead log and ends with a checkpoint, so each arm pays for
    copying exactly what it wrote into the database file. Without it the arms are compared across a threshold:
    SQLite checkpoints every 64 MiB of log (``governance/store/db.py``), the wider protected rows crossed it
    inside the timed run and the unprotected ones did not, so one arm paid a whole checkpoint (~0.14 s, ~7 µs a
    record) and the other none, where a running city pays in proportion to the bytes it writes.
    """
    with database(kind, workdir, label) as url:
        settings, engine, pipeline, adapter = governed_run(url, workdir / label, records_file,
                                                           protection=protection, variant=variant)
        if warm is not None:
            pipeline.ingest(adapter, read(adapter, warm, settings))
            empty_tables(engine)
        _checkpoint(engine)
        started, cpu = time.perf_counter(), time.process_time()
        report = pipeline.ingest(adapter, read(adapter, records_file, settings))
        checkpoint = time.perf_counter()
        _checkpoint(engine)
        ended = time.perf_counter()
        seconds, cpu, checkpoint = ended - started, time.process_time() - cpu, ended - checkpoint
        assert report.balanced, report
        engine.dispose()
        return seconds, report.entities, cpu, checkpoint


def protection_cost(kind: str, workdir: Path, records: int, repeats: int) -> dict[str, Any]:
    written = generate(FEED, records, workdir / "input")
    warm = generate(FEED, max(2000, records // 10), workdir / "warm", start=date(2025, 1, 6))
    off: list[float] = []
    on: list[float] = []
    cpu: dict[bool, list[float]] = {False: [], True: []}
    checkpoints: dict[bool, list[float]] = {False: [], True: []}
    stored = 0
    for i in range(repeats):
        for protection, times in ((False, off), (True, on)) if i % 2 == 0 else ((True, on), (False, off)):
            seconds, stored, cpu_seconds, checkpoint = ingest_once(
                kind, workdir, written, protection=protection, label=f"ingest-{'on' if protection else 'off'}-{i}",
                warm=warm)
            times.append(seconds)
            cpu[protection].append(cpu_seconds)
            checkpoints[protection].append(checkpoint)
    off_s, on_s = statistics.median(off), statistics.median(on)
    off_cpu, on_cpu = statistics.median(cpu[False]), statistics.median(cpu[True])
    return {
        "records": written.records, "entities": stored, "repeats": repeats,
        "off_seconds": round(off_s, 3), "on_seconds": round(on_s, 3),
        "off_records_per_s": round(written.records / off_s), "on_records_per_s": round(written.records / on_s),
        # the target's measure: the share of the throughput the protection takes; and the same as time added
        "cost": round(1 - off_s / on_s, 3), "target_cost": 0.25, "slowdown": round(on_s / off_s - 1, 3),
        # the same difference per record, which does not move when the rest of the pipeline gets faster or slower
        "cost_us_per_record": round((on_s - off_s) / written.records * 1e6, 1),
        "off_runs": [round(t, 3) for t in off], "on_runs": [round(t, 3) for t in on],
        # CPU seconds of this process only (a PostgreSQL server's work is not in them): steadier than wall time
        # on a shared machine, and what the storage step's own Python work costs
        "off_cpu_seconds": round(off_cpu, 3), "on_cpu_seconds": round(on_cpu, 3),
        "cpu_cost": round(1 - off_cpu / on_cpu, 3), "cpu_slowdown": round(on_cpu / off_cpu - 1, 3),
        # SQLite: the closing checkpoint's share of the seconds above (0 on PostgreSQL)
        "off_checkpoint_seconds": round(statistics.median(checkpoints[False]), 3),
        "on_checkpoint_seconds": round(statistics.median(checkpoints[True]), 3),
    }


def ablation(kind: str, workdir: Path, records: int, repeats: int) -> dict[str, Any]:
    """Median seconds of ``off``, ``on`` and each of :data:`VARIANTS`, run in a rotating order, and each one's cost
    and slowdown against ``off``."""
    written = generate(FEED, records, workdir / "input")
    warm = generate(FEED, max(2000, records // 10), workdir / "warm", start=date(2025, 1, 6))
    arms = ["off", "on", *VARIANTS]
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for i in range(repeats):
        for arm in arms[i % len(arms):] + arms[: i % len(arms)]:
            seconds, _, _, _ = ingest_once(kind, workdir, written, protection=arm != "off", label=f"ablation-{arm}-{i}",
                                           warm=warm, variant=arm if arm in VARIANTS else None)
            times[arm].append(seconds)
    off = statistics.median(times["off"])
    result: dict[str, Any] = {"records": written.records, "repeats": repeats}
    for arm in arms:
        median = statistics.median(times[arm])
        result[arm] = {"seconds": round(median, 3), "cost": round(1 - off / median, 3),
                       "slowdown": round(median / off - 1, 3),
                       "us_per_record": round((median - off) / written.records * 1e6, 1),
                       "runs": [round(t, 3) for t in times[arm]]}
    return result


def _filler_rows(count: int, *, expired: bool, subject: str | None = None,
                 data: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    retain = NOW - timedelta(days=1) if expired else NOW + timedelta(days=30)
    body = data or {"id": "urn:ngsi-ld:NoiseLevelObserved:bench", "type": "NoiseLevelObserved", "LAeq": 55.0}
    return [{
        "entity_id": str(body["id"]), "entity_type": str(body["type"]),
        "dataset": "care.observation" if subject else "monitoring.noise",
        "observed_at": NOW - timedelta(seconds=i), "data": body, "adapter": "bench", "adapter_version": "1",
        "source": "benchmark", "received_at": NOW, "stored_at": NOW, "raw_sha256": "0" * 64,
        "message_fingerprint": f"{i:064d}", "removed_fields": [], "subject": subject, "retain_until": retain,
    } for i in range(count)]


def _insert(engine: Engine, rows: list[dict[str, Any]], chunk: int = 20_000) -> None:
    for start in range(0, len(rows), chunk):
        with engine.begin() as conn:
            conn.execute(insert(_ENTITY), rows[start:start + chunk])


def sweep_rate(kind: str, workdir: Path, rows: int) -> dict[str, Any]:
    from governance.retention import sweep  # the retention module (issue 5)

    with database(kind, workdir, "sweep") as url:
        settings = Settings(data_dir=workdir / "sweep", database_url=url)
        engine = create_db_engine(url)
        init_schema(engine)
        _insert(engine, _filler_rows(rows, expired=True) + _filler_rows(rows // 10, expired=False))
        started = time.perf_counter()
        result = sweep(engine, settings, now=NOW, dry_run=False)
        seconds = time.perf_counter() - started
        engine.dispose()
    deleted = _deleted(result)
    assert deleted == rows, (deleted, rows)
    return {"rows": rows, "kept": rows // 10, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds)}


def _deleted(result: Any) -> int:
    for name in ("entities_deleted", "deleted", "total_deleted"):
        value = getattr(result, name, None)
        if isinstance(value, int):
            return value
    as_dict = result.as_dict() if hasattr(result, "as_dict") else dict(result)
    return int(as_dict.get("entities_deleted", as_dict.get("deleted", 0)))


def erase_time(kind: str, workdir: Path, rows: int) -> dict[str, Any]:
    from governance.subject import erase  # the subject-rights module (issue 5)

    with database(kind, workdir, "erase") as url:
        settings = Settings(data_dir=workdir / "erase", database_url=url)
        engine = create_db_engine(url)
        init_schema(engine)
        protector = FieldProtector.from_settings(settings, engine)
        plan_schema = default_catalog().get("ResidentObservation")
        from governance.protect.fieldcrypt import ProtectionPlan

        plan = ProtectionPlan.from_schema(plan_schema)
        assert plan is not None
        resident = "urn:ngsi-ld:Person:R-BENCH-1"
        entity = {"id": "urn:ngsi-ld:ResidentObservation:H-BENCH-heartRate", "type": "ResidentObservation",
                  "observationType": "heartRate", "numValue": 71, "unitCode": "5K", "refResident": resident,
                  "refDevice": "urn:ngsi-ld:Device:H-BENCH", "dateObserved": NOW.isoformat()}
        (sealed,) = protector.protect([entity], plan, observed_at=[NOW])
        subject = str(sealed["refResident"])
        _insert(engine, _filler_rows(rows, expired=False, subject=subject, data=sealed)
                + _filler_rows(rows // 10, expired=False))
        started = time.perf_counter()
        erase(engine, settings, resident)
        seconds = time.perf_counter() - started
        with engine.connect() as conn:
            left = conn.execute(_ENTITY.select().where(_ENTITY.c.subject == subject).limit(1)).first()
        engine.dispose()
    assert left is None
    return {"subject_rows": rows, "other_rows": rows // 10, "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.protect")
    parser.add_argument("--records", type=int, default=20_000, help="care-hub records per ingest run")
    parser.add_argument("--repeats", type=int, default=3, help="runs with protection on and off each")
    parser.add_argument("--sweep-records", type=int, default=200_000)
    parser.add_argument("--erase-records", type=int, default=100_000)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: ingest,sweep,erase")
    parser.add_argument("--ablation", action="store_true",
                        help="also run the storage step with parts left out, to see where the cost goes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    kinds = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="citygov-protect-bench-") as tmp:
            workdir = Path(tmp)
            result: dict[str, Any] = {"database": kind, "machine": machine(), "date": datetime.now(UTC).isoformat()}
            if "ingest" not in skip:
                result["protection"] = protection_cost(kind, workdir, args.records, args.repeats)
                print(kind, "protection", result["protection"], flush=True)
            if args.ablation:
                result["ablation"] = ablation(kind, workdir, args.records, args.repeats)
                print(kind, "ablation", result["ablation"], flush=True)
            if "sweep" not in skip:
                result["sweep"] = sweep_rate(kind, workdir, args.sweep_records)
                print(kind, "sweep", result["sweep"], flush=True)
            if "erase" not in skip:
                result["erase"] = erase_time(kind, workdir, args.erase_records)
                print(kind, "erase", result["erase"], flush=True)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"protect-{kind}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
