"""Audit log benchmark: batched appends with signed tree heads, full verification, proof generation.

    .venv/bin/python -m benchmarks.audit                        # 1,000,000 entries, SQLite and PostgreSQL
    .venv/bin/python -m benchmarks.audit --entries 100000 --database sqlite --out /tmp/bench

Targets (issue 3): >= 20,000 appends/s (batched, one signed tree head per batch); full verification of
1,000,000 entries <= 10 s; any proof at 1,000,000 entries <= 5 ms.

* **appends/s**: realistic ``data.request`` entries (~450 bytes canonical, one subject pseudonym in three)
  appended in batches of ``--batch`` through ``AuditLog.append`` — one transaction per batch with its
  entries, subtree nodes, head update and a signed tree head — into a fresh database (SQLite file, or a
  PostgreSQL schema of its own, dropped afterwards). Building the events is not timed.
* **verification**: ``verify_log`` over the whole log (every entry re-hashed and checked, the tree
  recomputed, every tree head's signature and root checked), wall clock.
* **proofs**: ``--samples`` inclusion proofs for random entries and consistency proofs from random sizes,
  at the final tree size, each timed from the call to the returned hashes (median, p95, max); a twentieth
  of them are also verified against the signed root.

Results go to stdout and, with ``--out DIR``, as JSON to ``DIR/audit-<db>.json``. Not a test: the numbers
are recorded in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from governance.audit.entries import AuditEvent
from governance.audit.log import AuditLog
from governance.audit.merkle import verify_consistency, verify_inclusion
from governance.audit.proofs import consistency_proof, inclusion_proof, root_at
from governance.audit.verify import verify_log
from governance.store.db import create_db_engine, init_schema, scratch_schema

POSTGRES_URL = os.environ.get("CITYGOV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
DEPARTMENTS = ("energy", "transport", "environment", "social-care", "emergency", "research")
DATASETS = ("lighting.streetlight", "monitoring.air-quality", "monitoring.noise", "care.observation", "care.alert")


def events(count: int, offset: int) -> list[AuditEvent]:
    """Realistic data-request entries (~450 bytes each, one pseudonymized subject in three)."""
    out = []
    for i in range(offset, offset + count):
        department = DEPARTMENTS[i % len(DEPARTMENTS)]
        out.append(AuditEvent(
            actor=f"department:{department}",
            action="data.request",
            stage="use",
            dataset=DATASETS[i % len(DATASETS)],
            purpose=f"{department}-planning",
            decision="deny" if i % 17 == 0 else "allow",
            reasons=["no_agreement"] if i % 17 == 0 else [],
            policy_revision="rev-0042",
            subjects=[f"urn:ngsi-ld:Person:R-{i % 5000:05d}"] if i % 3 == 0 else [],
            refs={"rows": i % 977, "request_sha256": f"{i:064x}", "fields": ["numValue", "dateObserved"]},
            time=START + timedelta(milliseconds=i),
        ))
    return out


@contextmanager
def database(kind: str, workdir: Path) -> Iterator[Engine]:
    if kind == "sqlite":
        engine = create_db_engine(f"sqlite:///{workdir / 'audit.db'}")
        init_schema(engine)
        yield engine
        engine.dispose()
        return
    with scratch_schema(POSTGRES_URL, "bench") as url:
        engine = create_db_engine(url)
        init_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()


def timed(samples: int, make: Callable[[int], Any]) -> dict[str, float]:
    times = []
    for i in range(samples):
        t0 = time.perf_counter()
        make(i)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p95_ms": round(times[int(len(times) * 0.95)], 3),
            "max_ms": round(times[-1], 3)}


def run(kind: str, entries: int, batch: int, samples: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as engine:
        log = AuditLog.open(engine, Path(tmp) / "data")
        prepared = [events(min(batch, entries - start), start) for start in range(0, entries, batch)]
        t0 = time.perf_counter()
        for chunk in prepared:
            log.append(chunk)
        append_s = time.perf_counter() - t0
        print(f"[{kind}] appended {entries:,} in {append_s:.1f} s: {entries / append_s:,.0f}/s", flush=True)

        t0 = time.perf_counter()
        report = verify_log(engine, log.public_key)
        verify_s = time.perf_counter() - t0
        print(f"[{kind}] verified {report.entries:,} entries, {report.tree_heads:,} tree heads in {verify_s:.2f} s",
              flush=True)

        head = log.latest_tree_head()
        assert head is not None
        size = head.tree_size
        rng = random.Random(7)
        seqs = [rng.randrange(size) for _ in range(samples)]
        olds = [rng.randrange(1, size) for _ in range(samples)]
        with engine.connect() as conn:
            incl = timed(samples, lambda i: inclusion_proof(conn, seqs[i], size))
            cons = timed(samples, lambda i: consistency_proof(conn, olds[i], size))
            for i in range(0, samples, max(1, samples // 20)):  # the proofs are right, not just fast
                p = inclusion_proof(conn, seqs[i], size)
                verify_inclusion(seqs[i], size, p.leaf_hash, p.hashes, head.root_hash)
                c = consistency_proof(conn, olds[i], size)
                verify_consistency(olds[i], size, root_at(conn, olds[i]), head.root_hash, c.hashes)
        print(f"[{kind}] inclusion proof at {size:,}: {incl}; consistency proof: {cons}", flush=True)
        return {
            "db": kind, "entries": entries, "batch": batch, "tree_heads": report.tree_heads,
            "appends_per_s": round(entries / append_s), "append_s": round(append_s, 2),
            "verify_s": round(verify_s, 2), "inclusion_proof": incl, "consistency_proof": cons,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="entries per append (one tree head each)")
    parser.add_argument("--samples", type=int, default=500, help="proofs timed per kind")
    parser.add_argument("--out", type=Path, help="also write audit-<db>.json there")
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql") if args.database == "both" else (args.database,):
        result = run(kind, args.entries, args.batch, args.samples)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / f"audit-{kind}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
