"""Policy benchmark: decision latency, decision-cache hit rate, and ingest throughput with the policy step.

    .venv/bin/python -m benchmarks.policy                      # every adapter, one generated city day each
    .venv/bin/python -m benchmarks.policy --adapter care-hub --repeat 3 --out /tmp/bench

* **latency**: ``EmbeddedEngine.decide`` (input document → regopy → checked ``Decision``) on one input per
  interesting path of each stage, ``--calls`` times each after a warm-up; p50 / p99 / max per call, and
  the bare regopy query (``query_bundle_entrypoint``) for comparison.
* **ingest**: for each adapter, one day of the demo city (``governance.demo``, scales as in
  ``benchmarks/ingest.py``) through ``Pipeline.ingest`` into a fresh SQLite file, with default settings
  (quality checks on) and batches of ``--batch`` — once **without** and once **with**
  ``CollectionPolicyStep`` (embedded engine, decisions recorded to a list), alternating, ``--repeat`` times;
  the best time of each is kept. A warm-up run per adapter (Great Expectations, schemas, statements) is not
  counted. Consent comes from a lookup that grants it to 95 % of residents (deterministically), so a few
  care observations are refused, as in production.
* **cache**: hits / (hits + misses) of the step's (revision, scope) decision cache over one ingest.

Target (issue 4): the policy step costs less than 10 % of ingest throughput. Not a test: the results are
recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from adapters.base import adapter_class
from governance.config import Settings
from governance.demo import FEED_NAMES, FeedFile, build_plan, make_feed, write_feed
from governance.ingest.pipeline import Pipeline
from governance.ingest.steps import Step
from governance.policy.bundle import load_folder
from governance.policy.collection import CollectionPolicyStep
from governance.policy.embedded import EmbeddedEngine
from governance.policy.model import DecisionRecord, PolicyInput
from governance.policy.point import DecisionPoint
from governance.store.db import create_db_engine, init_schema

SEED = 4242
DAY = date(2026, 11, 20)
RECEIVED_AT = datetime(2026, 11, 21, 6, tzinfo=UTC)
SCALES: dict[str, float] = {
    "streetlight-json": 4.0, "traffic-counter": 5.0, "ultralight": 4.0, "ttn-v3": 4.0,
    "department-csv": 20.0, "care-hub": 10.0,
}
TIME = "2026-11-20T12:00:00+00:00"


def latency_inputs() -> list[PolicyInput]:
    lab = {"kind": "external", "id": "university-mobility-lab"}
    dispatcher = {"kind": "department", "id": "d-7", "department": "emergency-services", "roles": ["dispatcher"]}
    documents: list[dict[str, Any]] = [
        {"stage": "collection", "actor": {"kind": "source", "id": "streetlight-json"},
         "dataset": "lighting.streetlight", "fields": ["id", "type", "status", "powerState", "location", "owner"]},
        {"stage": "collection", "actor": {"kind": "source", "id": "care-hub"}, "dataset": "care.observation",
         "fields": ["id", "type", "refResident", "refDevice", "observationType", "numValue", "dateObserved"],
         "subject": {"property": "refResident"}},
        {"stage": "storage", "actor": {"kind": "service", "id": "store"}, "dataset": "care.alert",
         "fields": ["id", "type", "refResident", "category", "severity", "dateIssued", "location"]},
        {"stage": "use", "actor": {"kind": "department", "id": "e-1", "department": "energy"},
         "purpose": "energy.management", "dataset": "lighting.traffic-flow",
         "fields": ["id", "intensity", "vehicleType", "location"]},
        {"stage": "sharing", "actor": lab, "purpose": "research.mobility", "dataset": "lighting.traffic-flow",
         "fields": ["id", "location", "intensity", "refRoadSegment"], "agreement": "dsa-2026-001"},
        {"stage": "sharing", "actor": dispatcher, "purpose": "emergency.response", "dataset": "care.alert",
         "fields": ["id", "location", "subCategory"], "context": {"time": TIME, "break_glass": True}},
    ]
    return [PolicyInput.model_validate({"context": {"time": TIME}, **d}) for d in documents]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure_latency(engine: EmbeddedEngine, calls: int) -> list[dict[str, Any]]:
    rows = []
    compiled = engine._local.compiled  # the bare query, for comparison with the full decide
    for policy_input in latency_inputs():
        for _ in range(50):
            engine.decide(policy_input)
        decide: list[float] = []
        bare: list[float] = []
        document = policy_input.document()
        entry = f"citygov/{policy_input.stage.value}/decision"
        for _ in range(calls):
            started = time.perf_counter()
            decision = engine.decide(policy_input)
            decide.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            compiled.query(entry, document)
            bare.append((time.perf_counter() - started) * 1000)
        assert decision.failure is None, decision
        rows.append({"stage": policy_input.stage.value, "dataset": policy_input.dataset, "allow": decision.allow,
                     "p50_ms": statistics.median(decide), "p99_ms": percentile(decide, 99), "max_ms": max(decide),
                     "query_p50_ms": statistics.median(bare)})
    return rows


class MostResidentsConsent:
    """Consent for 95 % of residents, chosen by a hash of their id (deterministic across runs)."""

    def has_consent(self, subject_id: str, purpose: str, at: datetime, *, recipient: str | None = None) -> bool:
        return hashlib.sha256(subject_id.encode()).digest()[0] < 243

    def consents_for(self, subject_ids: Iterable[str], purpose: str, at: datetime, *,
                     recipient: str | None = None) -> set[str]:
        return {s for s in subject_ids if self.has_consent(s, purpose, at)}


class TimedStep:
    def __init__(self, inner: Step) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    def run(self, adapter: Any, batch: Any) -> None:
        started = time.perf_counter()
        self.inner.run(adapter, batch)
        self.seconds += time.perf_counter() - started


def ingest_once(name: str, written: FeedFile, workdir: Path, label: str, batch: int,
                policy: CollectionPolicyStep | None) -> dict[str, Any]:
    path = workdir / f"{label}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    settings = Settings(data_dir=workdir, database_url=f"sqlite:///{path}", batch_size=batch)
    engine = create_db_engine(settings.resolved_database_url())
    init_schema(engine)
    pipeline = Pipeline(engine, settings, clock=lambda: RECEIVED_AT)
    timed = TimedStep(policy) if policy is not None else None
    if timed is not None:
        pipeline.steps.append(timed)
    adapter = adapter_class(name).from_config_file(written.config)
    started = time.perf_counter()
    report = pipeline.ingest(adapter, adapter.read(written.input, received_at=RECEIVED_AT,
                                                   max_bytes=settings.max_payload_bytes))
    seconds = time.perf_counter() - started
    engine.dispose()
    return {"seconds": seconds, "read": report.read, "accepted": report.accepted,
            "quarantined": report.quarantined, "policy_seconds": timed.seconds if timed else 0.0,
            "by_reason": dict(report.by_reason)}


def measure_ingest(adapters: list[str], workdir: Path, batch: int, repeat: int,
                   point: DecisionPoint) -> list[dict[str, Any]]:
    rows = []
    for name in adapters:
        feed = make_feed(name, build_plan(SEED, SCALES[name]))
        written = write_feed(feed, [DAY], workdir / name)
        ingest_once(name, written, workdir, f"{name}-warm", batch, None)  # warm-up, not counted
        off: list[dict[str, Any]] = []
        on: list[dict[str, Any]] = []
        cache: dict[str, Any] = {}
        for i in range(repeat):
            off.append(ingest_once(name, written, workdir, f"{name}-off-{i}", batch, None))
            step = CollectionPolicyStep(point, consent=MostResidentsConsent(), clock=lambda: RECEIVED_AT)
            on.append(ingest_once(name, written, workdir, f"{name}-on-{i}", batch, step))
            cache = {"hits": step.cache.hits, "misses": step.cache.misses, "hit_rate": step.cache.hit_rate}
        best_off = min(off, key=lambda r: r["seconds"])
        best_on = min(on, key=lambda r: r["seconds"])
        records = best_on["read"]
        rows.append({
            "adapter": name, "records": records, "batch": batch,
            "off_rps": records / best_off["seconds"], "on_rps": records / best_on["seconds"],
            "cost_pct": 100 * (1 - best_off["seconds"] / best_on["seconds"]),
            "step_share_pct": 100 * best_on["policy_seconds"] / best_on["seconds"],
            "step_us_per_record": 1e6 * best_on["policy_seconds"] / records,
            "refused_by_policy": best_on["quarantined"] - best_off["quarantined"],
            "cache": cache, "off_runs": off, "on_runs": on,
        })
    return rows


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import regopy

    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "regopy": regopy.__version__,
            "platform": platform.platform(), "date": datetime.now(UTC).date().isoformat()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="all", help="one adapter name, or all")
    parser.add_argument("--calls", type=int, default=2000, help="decisions timed per latency input")
    parser.add_argument("--batch", type=int, default=1000, help="records per pipeline batch")
    parser.add_argument("--repeat", type=int, default=2, help="policy off/on runs per adapter (best kept)")
    parser.add_argument("--out", type=Path, help="also write policy.json there")
    args = parser.parse_args(argv)
    adapters = list(FEED_NAMES) if args.adapter == "all" else [args.adapter]
    bundle = load_folder()
    engine = EmbeddedEngine(bundle)
    recorded: list[DecisionRecord] = []
    point = DecisionPoint(engine, recorded.append)
    latency = measure_latency(engine, args.calls)
    print(f"revision {bundle.short}; decision latency (embedded, per call, {args.calls} calls each):")
    for row in latency:
        print(f"  {row['stage']:10} {row['dataset']:22} allow={row['allow']!s:5} p50 {row['p50_ms']:.3f} ms  "
              f"p99 {row['p99_ms']:.3f} ms  max {row['max_ms']:.2f} ms  (bare query p50 {row['query_p50_ms']:.3f})")
    with tempfile.TemporaryDirectory(prefix="citygov-policy-bench-") as tmp:
        ingest = measure_ingest(adapters, Path(tmp), args.batch, args.repeat, point)
    print(f"ingest, one demo day per adapter, batches of {args.batch}, best of {args.repeat}:")
    for row in ingest:
        print(f"  {row['adapter']:17} {row['records']:6} records  off {row['off_rps']:7.0f}/s  "
              f"on {row['on_rps']:7.0f}/s  cost {row['cost_pct']:5.1f} %  step {row['step_share_pct']:4.1f} % "
              f"({row['step_us_per_record']:.1f} us/record)  cache hit {100 * row['cache']['hit_rate']:.1f} %"
              f"  refused {row['refused_by_policy']}")
    total_off = sum(r["records"] / r["off_rps"] for r in ingest)
    total_on = sum(r["records"] / r["on_rps"] for r in ingest)
    print(f"  all adapters: throughput cost {100 * (1 - total_off / total_on):.1f} %; "
          f"decisions recorded: {len(recorded)} ({sum(1 for r in recorded if not r.cached)} evaluated)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "policy.json").write_text(json.dumps(
            {"machine": machine(), "revision": bundle.revision, "latency": latency, "ingest": ingest}, indent=2))
    print(json.dumps(machine()))


if __name__ == "__main__":
    main()

