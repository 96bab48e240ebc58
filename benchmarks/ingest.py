"""Ingest benchmark: records/s through the whole collection pipeline, next to a plain-insert baseline.

    .venv/bin/python -m benchmarks.ingest                                  # 100,000 records x 6 adapters, both DBs
    .venv/bin/python -m benchmarks.ingest --records 20000 --database sqlite --adapter care-hub
    .venv/bin/python -m benchmarks.ingest --profile --records 20000 --adapter streetlight-json --database sqlite

For every adapter family the demo generator (``governance.demo``) writes a realistic input of
``--records`` records to a file — day after day of the simulated city, with its ~1.5 % of defects and
re-deliveries — streamed to disk, never held in memory. Then, per database (a fresh SQLite file, or a
fresh PostgreSQL schema dropped afterwards):

* **pipeline**: ``Pipeline.ingest`` from the file on disk, as ``citygov ingest`` runs it (read → parse →
  validate → quality → collection policy with consent → store, an audit entry per batch, batches of
  ``CITYGOV_BATCH_SIZE``; ``--bare``: the bare pipeline without policy, consent and audit), timed end
  to end after a warm-up on another small input — the same city on earlier days (Great Expectations
  contexts, compiled schemas, the policy bundle and statements are built once per process; the warm-up
  rows are deleted before timing). The care residents have their consent recorded and, with protection
  on, their data keys created first, as in a running city from a resident's first reading on.
  Per-stage seconds come from timing wrappers around the same steps and the message iterator.
* **baseline**: the same entity rows the pipeline stored (read back from its database before timing,
  batch by batch, in the same batches) inserted into the same ``entity`` table of another fresh
  database with the same driver and the same ``executemany`` insert, without validation. Only the
  insert transactions are timed.

``ratio`` is pipeline time / baseline time (the governance overhead). Peak memory is measured in child
processes at two input sizes of one adapter (``--memory-sizes``, ``--memory-adapter``) to show that it
stays flat as the input grows. Not a test: the results are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, delete

from adapters.base import Adapter, adapter_class
from governance.cli.common import governed_pipeline
from governance.config import Settings
from governance.consent.registry import ConsentRegistry
from governance.demo import FEED_NAMES, FeedFile, build_plan, make_feed, record_consents, write_feed
from governance.ingest.batch import Batch, IngestReport
from governance.ingest.message import RawMessage
from governance.ingest.pipeline import Pipeline
from governance.ingest.steps import Step
from governance.store import entities, ledger, quarantine
from governance.store.db import create_db_engine, init_schema, scratch_schema
from governance.store.entities import as_utc
from governance.store.tables import EntityRecord, IngestMessage, QuarantineRecord

POSTGRES_URL = os.environ.get("CITYGOV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SEED = 4242
START = date(2026, 1, 5)
WARM_START = date(2025, 1, 6)
RECEIVED_AT = datetime(2026, 11, 20, 12, tzinfo=UTC)
#: City size per feed for the benchmark: one simulated day gives ~4,000-10,000 records.
SCALES: dict[str, float] = {
    "streetlight-json": 4.0, "traffic-counter": 5.0, "ultralight": 4.0, "ttn-v3": 4.0,
    "department-csv": 20.0, "care-hub": 10.0,
}
WARM_RECORDS = 400
_ENTITY = EntityRecord.__table__  # type: ignore[attr-defined]
_TABLES = (EntityRecord.__table__, IngestMessage.__table__, QuarantineRecord.__table__)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------------
# Inputs and databases
# --------------------------------------------------------------------------------------------------


def generate(adapter: str, records: int, directory: Path, *, seed: int = SEED, start: date = START) -> FeedFile:
    """A realistic input of ``records`` records for ``adapter``, day after day of the demo city."""
    feed = make_feed(adapter, build_plan(seed, SCALES[adapter]))
    days = (start + timedelta(days=i) for i in itertools.count())
    return write_feed(feed, days, directory, limit=records)


@contextmanager
def database(kind: str, workdir: Path, label: str) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a PostgreSQL schema of its own (dropped after)."""
    if kind == "sqlite":
        path = workdir / f"{label}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    with scratch_schema(POSTGRES_URL, "bench") as url:
        yield url


def empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in _TABLES:
            conn.execute(delete(table))


def read(adapter: Adapter, written: FeedFile, settings: Settings) -> Iterator[RawMessage]:
    return adapter.read(written.input, received_at=RECEIVED_AT, max_bytes=settings.max_payload_bytes)


# --------------------------------------------------------------------------------------------------
# Pipeline and baseline runs
# --------------------------------------------------------------------------------------------------


class TimedStep:
    """The same step, with the seconds spent in it summed."""

    def __init__(self, inner: Step) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    def run(self, adapter: Adapter, batch: Batch) -> None:
        started = time.perf_counter()
        self.inner.run(adapter, batch)
        self.seconds += time.perf_counter() - started


class Probes:
    """Timing wrappers around the pipeline's other work, for the length of one run (benchmark only).

    ``fingerprint`` (each message's SHA-256 identity), ``dedup`` (the ledger lookup), ``store`` (the
    ledger, entity and quarantine inserts), ``audit`` (the batch's audit entries, inside its
    transaction); what is left of the run is row building, the transaction's begin/commit and the loop.
    """

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.seconds: dict[str, float] = {"fingerprint": 0.0, "dedup": 0.0, "store": 0.0, "audit": 0.0}
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, attribute: str, stage: str) -> None:
        inner = getattr(owner, attribute)
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                seconds[stage] += time.perf_counter() - started

        self._undo.append((owner, attribute, vars(owner).get(attribute, _ABSENT)))
        setattr(owner, attribute, timed)

    def __enter__(self) -> Probes:
        original = RawMessage.fingerprint
        seconds = self.seconds

        def fingerprint(message: RawMessage, adapter: str) -> str:
            started = time.perf_counter()
            try:
                return original(message, adapter)
            finally:
                seconds["fingerprint"] += time.perf_counter() - started

        self._undo.append((RawMessage, "fingerprint", original))
        RawMessage.fingerprint = fingerprint  # type: ignore[method-assign,assignment]
        self._wrap(self.pipeline, "_mark_duplicates", "dedup")
        for module, function in ((ledger, "add_messages"), (entities, "add_entities"),
                                 (quarantine, "add_quarantined")):
            self._wrap(module, function, "store")
        for observer in self.pipeline.observers:
            self._wrap(observer, "batch_committed", "audit")
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attribute, previous in reversed(self._undo):
            if previous is _ABSENT:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, previous)
        self._undo.clear()


_ABSENT = object()


class TimedIterator:
    """Messages from the reader, with the seconds spent reading them summed."""

    def __init__(self, inner: Iterator[RawMessage]) -> None:
        self.inner = inner
        self.seconds = 0.0

    def __iter__(self) -> TimedIterator:
        return self

    def __next__(self) -> RawMessage:
        started = time.perf_counter()
        try:
            return next(self.inner)
        finally:
            self.seconds += time.perf_counter() - started


@dataclass
class Run:
    database: str
    adapter: str
    records: int
    entities: int
    quarantined: int
    duplicates: int
    pipeline_s: float
    baseline_s: float
    warmup_s: float
    stages: dict[str, float] = field(default_factory=dict)
    readback_s: float = 0.0
    """Untimed: reading the stored rows back for the baseline."""

    @property
    def pipeline_rps(self) -> float:
        return self.records / self.pipeline_s

    @property
    def baseline_rps(self) -> float:
        return self.records / self.baseline_s

    @property
    def ratio(self) -> float:
        return self.pipeline_s / self.baseline_s

    @property
    def entities_ps(self) -> float:
        return self.entities / self.pipeline_s

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pipeline_rps": round(self.pipeline_rps), "baseline_rps": round(self.baseline_rps),
                "ratio": round(self.ratio, 2), "entities_ps": round(self.entities_ps)}


def make_pipeline(engine: Engine, settings: Settings, name: str, *, governed: bool) -> Pipeline:
    """The pipeline as ``citygov ingest`` runs it (collection policy, consent, audit log), or the bare one.

    For the care feed the residents of the generated inputs get their consent recorded first, as the demo
    does: without it the collection policy refuses their observations.
    """
    if not governed:
        return Pipeline(engine, settings)
    pipeline = governed_pipeline(engine, settings)
    if name == "care-hub":
        registry = ConsentRegistry.from_settings(settings, engine)
        for seed in (SEED, SEED + 1):
            plan = build_plan(seed, SCALES[name])
            record_consents(registry, plan)
            enrol_keys(pipeline, [f"urn:ngsi-ld:Person:{resident.id}" for resident in plan.residents])
    return pipeline


def enrol_keys(pipeline: Pipeline, residents: list[str]) -> None:
    """Create the residents' data keys before timing, as they exist in a running city from a resident's
    first reading on (creating one — a key file written and synced — is a one-off cost per resident,
    not a cost of ingesting their readings)."""
    for step in pipeline.steps:
        protector = getattr(step, "protector", None)
        if protector is not None:
            protector.subject_keys.data_keys({protector.pseudonyms.of(r) for r in residents}, create=True)


def timed_pipeline(engine: Engine, settings: Settings, name: str, *, governed: bool
                   ) -> tuple[Pipeline, list[TimedStep]]:
    pipeline = make_pipeline(engine, settings, name, governed=governed)
    steps = [TimedStep(step) for step in pipeline.steps]
    pipeline.steps = list(steps)
    return pipeline, steps


def run_pipeline(
    url: str, name: str, written: FeedFile, warm: FeedFile, workdir: Path, *, governed: bool = True,
    protection: bool = True,
    profile: Path | None = None,
) -> tuple[IngestReport, float, float, dict[str, float], list[int]]:
    """(report, seconds, warm-up seconds, seconds per stage, entities per batch) of one timed run."""
    settings = Settings(data_dir=workdir, database_url=url, protection=protection)
    engine = create_db_engine(url)
    init_schema(engine)
    pipeline, steps = timed_pipeline(engine, settings, name, governed=governed)
    started = time.perf_counter()
    warm_adapter = adapter_class(name).from_config_file(warm.config)
    pipeline.ingest(warm_adapter, read(warm_adapter, warm, settings))
    empty_tables(engine)
    warmup = time.perf_counter() - started
    for step in steps:
        step.seconds = 0.0
    adapter = adapter_class(name).from_config_file(written.config)
    per_batch: list[int] = []
    messages = TimedIterator(read(adapter, written, settings))
    profiler = cProfile.Profile() if profile else None
    with Probes(pipeline) as probes:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = pipeline.ingest(adapter, messages, on_batch=lambda r: per_batch.append(r.entities))
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
    engine.dispose()
    stages = {"read": messages.seconds, **probes.seconds, **{s.name: s.seconds for s in steps}}
    stages["rest"] = seconds - sum(stages.values())  # row building, begin/commit, the batch loop
    if profiler and profile:
        write_profile(profiler, profile)
    return report, seconds, warmup, stages, per_batch


_COLUMNS = ("entity_id", "entity_type", "dataset", "observed_at", "data", "adapter", "adapter_version", "source",
            "received_at", "stored_at", "raw_sha256", "message_fingerprint", "removed_fields")
_TIMES = ("observed_at", "received_at", "stored_at")
_JSON = ("data", "removed_fields")


def _as_datetime(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return as_utc(value)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)  # SQLite keeps UTC as naive text


def stored_rows(source: Engine, per_batch: list[int], page: int = 5000) -> Iterator[list[dict[str, Any]]]:
    """The entity rows of ``source`` in insertion order, cut into the pipeline's batches.

    Read through the bare driver (a named, server-side cursor on PostgreSQL): only values, converted
    back to what the pipeline handed to the insert (aware datetimes, decoded JSON).
    """
    sqlite = source.dialect.name == "sqlite"
    columns = ", ".join(f"{c}::text" if c in _JSON and not sqlite else c for c in _COLUMNS)

    def rows() -> Iterator[dict[str, Any]]:
        conn = source.raw_connection()
        try:
            cursor = conn.cursor() if sqlite else conn.cursor(name="citygov_bench_readback")
            cursor.execute(f"SELECT {columns} FROM entity ORDER BY pk")
            while chunk := cursor.fetchmany(page):
                for values in chunk:
                    row = dict(zip(_COLUMNS, values, strict=True))
                    for key in _TIMES:
                        row[key] = _as_datetime(row[key])
                    for key in _JSON:
                        if isinstance(row[key], str | bytes):
                            row[key] = orjson.loads(row[key])
                    yield row
            cursor.close()
        finally:
            conn.close()

    stream = rows()
    for size in per_batch:
        batch = list(itertools.islice(stream, size))
        if batch:
            yield batch


def run_baseline(url: str, source_url: str, per_batch: list[int]) -> tuple[float, float]:
    """(seconds to insert the pipeline's entity rows batch by batch, with nothing else; seconds reading them)."""
    source = create_db_engine(source_url)
    target = create_db_engine(url)
    init_schema(target)
    seconds = 0.0
    warmed = False
    began = time.perf_counter()
    for batch in stored_rows(source, per_batch):
        if not warmed:  # compile the statement and open the connection pool outside the timing
            with target.begin() as conn:
                entities.add_entities(conn, batch[:20])
            empty_tables(target)
            warmed = True
        started = time.perf_counter()
        with target.begin() as conn:
            entities.add_entities(conn, batch)
        seconds += time.perf_counter() - started
    source.dispose()
    target.dispose()
    return seconds, time.perf_counter() - began - seconds


def benchmark(kind: str, name: str, written: FeedFile, warm: FeedFile, workdir: Path, *, governed: bool = True,
              protection: bool = True,
              profile: Path | None = None) -> Run:
    with database(kind, workdir, f"{name}-pipeline") as url:
        report, seconds, warmup, stages, per_batch = run_pipeline(url, name, written, warm, workdir, governed=governed,
                                                                  protection=protection,
                                                                  profile=profile)
        assert report.balanced and report.read == written.records, report
        with database(kind, workdir, f"{name}-baseline") as base_url:
            baseline, preparing = run_baseline(base_url, url, per_batch)
            check = create_db_engine(base_url)
            assert entities.count_entities(check) == report.entities
            check.dispose()
    return Run(kind, name, report.read, report.entities, report.quarantined, report.duplicates,
               round(seconds, 3), round(baseline, 3), round(warmup, 3), {k: round(v, 3) for k, v in stages.items()},
               round(preparing, 1))


def write_profile(profiler: cProfile.Profile, path: Path) -> None:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    path.write_text(out.getvalue())
    stats.dump_stats(path.with_suffix(".prof"))  # the whole profile, for pstats or snakeviz


# --------------------------------------------------------------------------------------------------
# Memory at two input sizes (child processes)
# --------------------------------------------------------------------------------------------------


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM), so that the next peak is the ingest's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def probe_memory(args: argparse.Namespace) -> None:
    """Child process: warm up, then ingest one input into a fresh SQLite file; print memory as JSON."""
    workdir = Path(args.workdir)
    written = FeedFile(args.adapter, Path(args.input), Path(args.config) if args.config else None)
    warm = FeedFile(args.adapter, Path(args.warm_input), Path(args.warm_config) if args.warm_config else None)
    url = f"sqlite:///{workdir / f'memory-{uuid.uuid4().hex[:8]}.db'}"
    settings = Settings(data_dir=workdir, database_url=url, protection=not args.no_protection)
    engine = create_db_engine(url)
    init_schema(engine)
    pipeline = make_pipeline(engine, settings, args.adapter, governed=not args.bare)
    warm_adapter = adapter_class(args.adapter).from_config_file(warm.config)
    pipeline.ingest(warm_adapter, read(warm_adapter, warm, settings))
    empty_tables(engine)
    rss_warm = _status_mb("VmRSS")
    reset = _reset_peak()
    adapter = adapter_class(args.adapter).from_config_file(written.config)
    started = time.perf_counter()
    report = pipeline.ingest(adapter, read(adapter, written, settings))
    seconds = time.perf_counter() - started
    # without the reset, ru_maxrss is the best available (on Linux it may include the parent's RSS at fork)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_end = _status_mb("VmRSS")
    engine.dispose()
    Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    print(json.dumps({"records": report.read, "entities": report.entities, "seconds": round(seconds, 2),
                      "rss_after_warmup_mb": round(rss_warm, 1), "peak_rss_ingest_mb": round(peak, 1),
                      "rss_end_mb": round(rss_end, 1), "peak_is_ingest_only": reset}))


def measure_memory(adapter: str, sizes: list[int], workdir: Path, *, governed: bool = True,
                   protection: bool = True) -> list[dict[str, Any]]:
    warm = generate(adapter, WARM_RECORDS, workdir / f"mem-warm-{adapter}", seed=SEED, start=WARM_START)
    results = []
    for size in sizes:
        written = generate(adapter, size, workdir / f"mem-{adapter}-{size}")
        command = [sys.executable, "-m", "benchmarks.ingest", "--probe-memory", "--adapter", adapter,
                   "--workdir", str(workdir), "--input", str(written.input), "--warm-input", str(warm.input)]
        if written.config:
            command += ["--config", str(written.config)]
        if not governed:
            command.append("--bare")
        if not protection:
            command.append("--no-protection")
        if warm.config:
            command += ["--warm-config", str(warm.config)]
        done = subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["input_mb"] = round(written.input.stat().st_size / 2**20, 1)
        results.append({"adapter": adapter, "size": size, **result})
        written.input.unlink()
        print(f"  memory {adapter} {size:>7} records: peak RSS while ingesting {result['peak_rss_ingest_mb']} MB "
              f"(after warm-up {result['rss_after_warmup_mb']} MB, at the end {result['rss_end_mb']} MB), "
              f"input {result['input_mb']} MB", flush=True)
    return results


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gb": round(mem_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "sqlite": __import__("sqlite3").sqlite_version, "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "loadavg_start": os.getloadavg()}


def table(runs: list[Run]) -> str:
    stages = list(dict.fromkeys(stage for r in runs for stage in r.stages))
    lines = ["| adapter | records | entities | pipeline rec/s | baseline rec/s | ratio | entities/s | "
             + " | ".join(f"{stage} s" for stage in stages) + " |",
             "|---|" + "---:|" * (6 + len(stages))]
    for r in runs:
        lines.append(
            f"| {r.adapter} | {r.records:,} | {r.entities:,} | {r.pipeline_rps:,.0f} | {r.baseline_rps:,.0f} | "
            f"{r.ratio:.2f} | {r.entities_ps:,.0f} | " + " | ".join(f"{r.stages.get(s, 0):.2f}" for s in stages) + " |"
        )
    return "\n".join(lines)


def stage_table(runs: list[Run]) -> str:
    """Microseconds per record in each stage: where a record's time goes."""
    stages = list(dict.fromkeys(stage for r in runs for stage in r.stages))
    lines = ["| adapter | µs/record | " + " | ".join(stages) + " |", "|---|" + "---:|" * (1 + len(stages))]
    for r in runs:
        per = {s: r.stages.get(s, 0.0) / r.records * 1e6 for s in stages}
        lines.append(f"| {r.adapter} | {r.pipeline_s / r.records * 1e6:.1f} | "
                     + " | ".join(f"{per[s]:.1f}" for s in stages) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.ingest")
    parser.add_argument("--records", type=int, default=100_000, help="records per adapter (default 100000)")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--adapter", default="all", help=f"one of {', '.join(FEED_NAMES)}, or all")
    parser.add_argument("--memory-adapter", default="care-hub")
    parser.add_argument("--memory-sizes", default="50000,200000", help="comma-separated; empty to skip")
    parser.add_argument("--bare", action="store_true",
                        help="the bare Pipeline (parse, validate, quality, store) without the collection policy, "
                             "consent and audit log that `citygov ingest` puts around it")
    parser.add_argument("--no-protection", action="store_true",
                        help="leave out the storage step (pseudonyms, field encryption, retention) of the governed "
                             "pipeline: the pipeline the ingest throughput target is set for")
    parser.add_argument("--profile", action="store_true", help="cProfile the pipeline runs (slower; files in --out)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the JSON results and profiles")
    parser.add_argument("--workdir", type=Path, default=None, help="where inputs and SQLite files go (temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    # child-process mode for the memory probe
    parser.add_argument("--probe-memory", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--input", "--config", "--warm-input", "--warm-config"):
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    if args.probe_memory:
        probe_memory(args)
        return

    adapters = list(FEED_NAMES) if args.adapter == "all" else [args.adapter]
    unknown = [a for a in adapters if a not in FEED_NAMES]
    if unknown:
        parser.error(f"unknown adapter {unknown[0]!r}; choose from {', '.join(FEED_NAMES)} or all")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="citygov-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    info["command"] = " ".join(["python -m benchmarks.ingest", *(argv if argv is not None else sys.argv[1:])])
    print(f"# ingest benchmark — {info['date']}\n{info['nproc']} CPU ({info['cpu']}), {info['ram_gb']} GB RAM, "
          f"Python {info['python']}, SQLite {info['sqlite']}; load average {info['loadavg_start']}", flush=True)
    began = time.perf_counter()
    runs: list[Run] = []
    try:
        for name in adapters:
            started = time.perf_counter()
            written = generate(name, args.records, workdir / name)
            warm = generate(name, WARM_RECORDS, workdir / f"warm-{name}", seed=SEED, start=WARM_START)
            size = written.input.stat().st_size / 2**20
            print(f"{name}: {written.records:,} records, {size:.0f} MB, generated in "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
            for kind in kinds:
                profile = args.out / f"profile-{kind}-{name}.txt" if args.profile and args.out else None
                run = benchmark(kind, name, written, warm, workdir, governed=not args.bare,
                                protection=not args.no_protection, profile=profile)
                runs.append(run)
                print(f"  {kind:<10} pipeline {run.pipeline_rps:>9,.0f} rec/s  baseline {run.baseline_rps:>9,.0f} "
                      f"rec/s  ratio {run.ratio:4.2f}  {run.entities_ps:>9,.0f} entities/s  "
                      f"({run.pipeline_s:.1f} s vs {run.baseline_s:.1f} s; stages {run.stages}; "
                      f"warm-up {run.warmup_s:.1f} s, read-back {run.readback_s:.1f} s)", flush=True)
            written.input.unlink()
        sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
        memory = (measure_memory(args.memory_adapter, sizes, workdir, governed=not args.bare,
                                 protection=not args.no_protection) if sizes else [])
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()
    info["total_s"] = round(time.perf_counter() - began, 1)
    for kind in kinds:
        print(f"\n## {kind}\n\n{table([r for r in runs if r.database == kind])}")
        print(f"\nµs per record and stage ({kind}):\n\n{stage_table([r for r in runs if r.database == kind])}")
    if memory:
        print("\n## memory (SQLite, child process per size)\n\n"
              "| adapter | records | input MB | RSS after warm-up MB | peak RSS while ingesting MB | "
              "RSS at the end MB | seconds |\n|---|---:|---:|---:|---:|---:|---:|")
        for m in memory:
            print(f"| {m['adapter']} | {m['size']:,} | {m['input_mb']} | {m['rss_after_warmup_mb']} | "
                  f"{m['peak_rss_ingest_mb']} | {m['rss_end_mb']} | {m['seconds']} |")
    print(f"\ntotal {info['total_s']} s; load average at the end {info['loadavg_end']}")
    if args.out:
        document = {"machine": info, "runs": [r.as_dict() for r in runs], "memory": memory}
        (args.out / "ingest.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
