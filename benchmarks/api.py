"""Signed API benchmark: signed decisions per second with latency percentiles, and a large anonymized export,
each next to an unsigned baseline measured in the same run.

    .venv/bin/python -m benchmarks.api                                    # SQLite, 1 worker, 3000 requests
    .venv/bin/python -m benchmarks.api --database postgresql --workers 2 --requests 5000 --concurrency 16
    .venv/bin/python -m benchmarks.api --export-records 0                 # only the small-query part
    .venv/bin/python -m benchmarks.api --query-layer fixed --export-records 0   # the API layer alone

Targets (issue 6): >= 500 signed decisions/s per worker, p99 <= 50 ms.

Setup: a fresh database (a SQLite file, or a PostgreSQL schema of its own, dropped afterwards) with
``--small-records`` TrafficFlowObserved entities for the small queries and ``--export-records`` more for the
export, written straight to the ``entity`` table; two callers registered with generated Ed25519 keys —
``transport`` (a department: the *use* stage) and ``university-mobility-lab`` (external, under agreement
``dsa-2026-001``, whose obligations generalize location and time: the *sharing* stage).

Each mode runs a real ``uvicorn`` with ``--workers`` processes on a loopback port, the load generator in
this process (asyncio + httpx, ``--concurrency`` connections, each an ``httpx.AsyncClient`` of its own: a
shared pool made some requests wait in the client itself, see :func:`load`; a request's latency runs from the
call that sends it to its whole answer read):

* **signed**: ``governance.api.app:app_from_env`` as ``citygov serve`` runs it (``signed_app``). Every
  request is a fresh signed token (signed before the timed loop: the load generator's own signing is not
  the server's cost), verified, the policy decided, the query run, then its ``jti``, its decision entry and
  its request entry written in one transaction, and the answer signed. Small queries: ten sensors by id
  (``where.ids``, ``page_size`` 10) out of the small set, the *use* stage.
* **unsigned** (baseline): the same app and the same request path, with only the two signature operations
  replaced by fixed stand-ins (``unsigned_app`` below): the request token's signature is not verified
  (``governance.api.auth._verified`` returns the token's payload as it is) and the response's signature is a
  fixed string (no Ed25519 signature, no body hash). The load generator sends the same freshly signed tokens
  in both modes (signed before the timed loop), so everything else is identical and measured in both: token
  parsing, the key lookup, the claims and request-binding checks, the ``jti`` recorded in the request's one
  write transaction with its policy decision entry and request entry, the query and the answer's encoding.
  ``ratio`` = unsigned throughput / signed throughput: what verifying the request's signature and signing
  the response cost (expected a little over 1; a ratio under 1 is noise — compare the CPU per request).
* ``--query-layer fixed`` swaps the query layer for ``FixedQueryLayer`` (ten fixed records, no policy, no
  reads) in both modes: what the API layer alone sustains.

The server logs at ``WARNING`` unless ``--log-level INFO`` (the served default: one JSON line a request, on the
server's stderr, which goes to a temporary file).

The load generator freezes what it holds before the timed loop (``gc.freeze``: its full collections would pause
its own event loop with requests in flight and count as their latency); the server does the same once started
(``citygov serve``, see docs/api.md), so a pause of the server's own still shows.

Besides req/s and latency, each small-query run reports the **server's CPU time per request** (user + system
of the uvicorn process and its children, from ``/proc``, over the timed loop): on a machine shared with the load
generator and other work it is steadier than req/s.

The **export** pages through every record of the export set as the external recipient (``page_size``
``CITYGOV_QUERY_MAX_PAGE_SIZE``), verifying each page's signature in the signed run; records/s and MB/s,
with the unsigned baseline. Warm-up requests (policy compile per server thread, connection pools) are not
timed. Results go to stdout and, with ``--out DIR``, as JSON. Not a test: the lead records the numbers in
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from governance.api.client import RequestSigner, generate_key, public_of
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.config import Settings
from governance.store.db import create_db_engine, init_schema, scratch_schema

POSTGRES_URL = os.environ.get("CITYGOV_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
START = datetime(2026, 11, 1, tzinfo=UTC)
SMALL_QUERY = {"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
               "fields": ["id", "type", "intensity", "location"], "page_size": 10,
               "where": {"ids": [f"urn:ngsi-ld:TrafficFlowObserved:bench-{i}" for i in range(0, 100, 10)]}}
EXPORT_QUERY = {"dataset": "lighting.traffic-flow", "purpose": "research.mobility", "agreement": "dsa-2026-001",
                "fields": ["id", "type", "location", "intensity", "dateObservedFrom", "dateObservedTo"]}


# --- the unsigned baseline app (benchmark only: never served by citygov) --------------------------------------


class FixedQueryLayer:
    """``--query-layer fixed``: answers every query with the same ten records, no policy, no store reads — to
    measure the API layer alone (authentication, replay store, audit entry, response signature)."""

    def run(self, requester: Any, request: Any) -> Any:
        from governance.sharing.query import QueryResult

        records = [{"id": f"urn:ngsi-ld:TrafficFlowObserved:bench-{i}", "type": "TrafficFlowObserved",
                    "intensity": 100 + i} for i in range(10)]
        return QueryResult(records=records, next_cursor=None, stage="use", decision_id=uuid.uuid4().hex,
                           policy_revision="fixed", fields=["id", "type", "intensity"])


def signed_app() -> Any:
    """The app as ``citygov serve`` builds it (``--query-layer fixed``: over ``FixedQueryLayer``)."""
    from governance.api.app import QueryBackend, app_from_env, create_app

    if os.environ.get("BENCH_QUERY_LAYER") != "fixed":
        return app_from_env()
    from governance.logs import configure_logging
    from governance.sharing.query import QueryRequest, Requester

    settings = Settings()
    configure_logging(settings.log_level)
    backend = QueryBackend(service=FixedQueryLayer(), request_model=QueryRequest,
                           make_requester=lambda c: Requester(id=c.name, kind=c.kind, roles=c.roles),
                           policy_revision=lambda: "fixed")
    return create_app(settings, backend=backend, freeze_startup_objects=True)


def unsigned_app() -> Any:
    """The real app on the real request path, with the request signature's verification and the response
    signature replaced by fixed stand-ins (see the module docstring); everything else runs as served."""
    from governance.api import auth

    def payload_unverified(parts: list[str], payload: bytes | None, registered: Any, claimed: Any) -> bytes:
        if payload is None:
            raise auth.SignedRequestError("token_malformed", "DecodeError", claimed=claimed)
        return payload

    class FixedSignature:
        """Stands in for ``ResponseSigner``: the same call, a fixed signature."""

        def __init__(self, real: Any) -> None:
            self.kid, self.jwks = real.kid, real.jwks

        def sign(self, body: bytes, **_: Any) -> str:
            return "unsigned.."

    auth._verified = payload_unverified  # a benchmark server only
    app = signed_app()
    state = app.state.api
    state.signer = FixedSignature(state.signer)
    return app


# --- setup --------------------------------------------------------------------------------------------------


@contextmanager
def database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    with scratch_schema(POSTGRES_URL, "bench") as url:
        yield url


def traffic_rows(first: int, count: int) -> Iterator[dict[str, Any]]:
    for i in range(first, first + count):
        begin = START + timedelta(minutes=i)
        when = begin.isoformat().replace("+00:00", "Z")
        entity = {
            "id": f"urn:ngsi-ld:TrafficFlowObserved:bench-{i}", "type": "TrafficFlowObserved",
            "location": {"type": "Point", "coordinates": [round(2.10 + (i % 500) * 0.0003, 6),
                                                           round(41.35 + (i // 500 % 500) * 0.0003, 6)]},
            "dateObserved": when, "dateObservedFrom": when,
            "dateObservedTo": (begin + timedelta(minutes=15)).isoformat().replace("+00:00", "Z"),
            "intensity": 50 + i % 400, "refRoadSegment": f"urn:ngsi-ld:RoadSegment:rs-{i % 40}",
        }
        raw = hashlib.sha256(str(entity["id"]).encode()).hexdigest()
        yield {"entity_id": entity["id"], "entity_type": "TrafficFlowObserved", "dataset": "lighting.traffic-flow",
               "observed_at": begin, "data": entity, "adapter": "bench", "adapter_version": "1", "source": "bench",
               "received_at": begin, "stored_at": begin, "raw_sha256": raw, "message_fingerprint": raw,
               "removed_fields": [], "subject": None, "retain_until": None, "policy_revision": None}


def prepare(settings: Settings, small: int, export: int) -> dict[str, RequestSigner]:
    """Tables, entities and the two registered callers; returns their signers."""
    from governance.api.departments import DepartmentRegistry
    from governance.audit.log import AuditLog
    from governance.store.entities import add_entities

    for module in ("governance.sharing.tables", "governance.anonymize.tables", "governance.api.tables"):
        __import__(module)
    engine = create_db_engine(settings.resolved_database_url())
    try:
        init_schema(engine)
        total, chunk = small + export, 10_000
        for first in range(0, total, chunk):
            with engine.begin() as conn:
                add_entities(conn, list(traffic_rows(first, min(chunk, total - first))))
        registry = DepartmentRegistry(engine, AuditLog.open(engine, settings.data_dir, settings=settings))
        signers = {}
        for name, kind in (("transport", "department"), ("university-mobility-lab", "external")):
            key = generate_key("EdDSA")
            registry.add(name, public_of(key), kind=kind, actor="bench")
            signers[name] = RequestSigner(key, public_of(key).kid, name, lifetime=300)
        return signers
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and every live descendant (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid, cpu in used.items():
        walk = pid
        while walk not in (0, 1) and walk != root:
            walk = parents.get(walk, 0)
        if walk == root:
            total += cpu
    return total


@contextmanager
def server(target: str, env: dict[str, str], workers: int) -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", target, "--factory", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    # the server's log goes to a file, not a pipe: at INFO (a line a request) an unread pipe would fill and stall it
    with tempfile.TemporaryFile() as log_file:
        proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_file.seek(0)
                    err = log_file.read().decode(errors="replace")
                    raise SystemExit(f"server did not start: {err[-3000:]}")
                time.sleep(0.2)
            yield base, proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# --- load ---------------------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    mode: str
    requests: int
    errors: int
    seconds: float
    per_second: float
    per_second_per_worker: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_cores: float
    """CPU the load generator itself used (cores): on a small machine it competes with the server."""
    server_cpu_ms_per_request: float
    """CPU time (user + system) of the server's processes during the timed loop, per request: steadier than req/s
    on a shared machine."""
    server_cpu_cores: float


def prepared_requests(signer: RequestSigner, url: str, body: bytes, count: int) -> list[dict[str, str]]:
    """Fresh signed tokens, one a request (both modes: the baseline server parses and checks them all the same)."""
    return [signer.headers("POST", url, body) for _ in range(count)]


async def load(base: str, headers: list[dict[str, str]], body: bytes, concurrency: int) -> tuple[
        list[float], int, float]:
    """``concurrency`` connections, each sending its next request as soon as its previous answer is in.

    Each connection is a client of its own (a pool of one): with one shared pool of ``concurrency`` connections,
    httpcore hands a connection that has just come free to a waiting request *and* to a new one; the loser gets
    ``ConnectionNotAvailable`` and retries, and may lose again and again — under this load a few requests in a
    hundred retried up to several hundred times before they were sent, 100 to 900 ms that the server never saw
    (its own handling of those requests took 1 to 2 ms). That was the whole p99 of this benchmark.
    """
    url = f"{base}/v1/data/query"
    latencies: list[float] = []
    errors = 0
    queue = iter(headers)
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        for header in queue:
            started = time.perf_counter()
            response = await client.post(url, content=body, headers=header)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors += 1

    clients = [httpx.AsyncClient(limits=one, timeout=60) for _ in range(concurrency)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for client in clients))
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            await client.aclose()
    return latencies, errors, elapsed


def run_small(mode: str, base: str, pid: int, signer: RequestSigner, args: argparse.Namespace) -> LoadResult:
    body = orjson.dumps(SMALL_QUERY)
    url = f"{base}/v1/data/query"
    warm = prepared_requests(signer, url, body, args.warmup)
    asyncio.run(load(base, warm, body, args.concurrency))
    headers = prepared_requests(signer, url, body, args.requests)
    probe = httpx.post(url, content=body, headers=prepared_requests(signer, url, body, 1)[0])
    if probe.status_code != 200:
        raise SystemExit(f"{mode}: the small query is refused ({probe.status_code}): {probe.text[:300]}")
    # the load generator's own full collections (~75 ms over the prepared tokens and everything imported) would
    # stop its event loop with requests in flight and count as their latency: what it holds now is left out of
    # them (gc.freeze); what the timed loop makes is still collected. The server does the same once started.
    gc.collect()
    gc.freeze()
    try:
        cpu, server_cpu = time.process_time(), process_tree_cpu(pid)
        latencies, errors, elapsed = asyncio.run(load(base, headers, body, args.concurrency))
        client_cpu = time.process_time() - cpu
    finally:
        gc.unfreeze()
    server_cpu = process_tree_cpu(pid) - server_cpu
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    rate = len(latencies) / elapsed
    return LoadResult(mode, len(latencies), errors, round(elapsed, 3), round(rate, 1),
                      round(rate / args.workers, 1), round(statistics.median(latencies) * 1000, 2), pct(0.90),
                      pct(0.99), round(ordered[-1] * 1000, 2), round(client_cpu / elapsed, 2),
                      round(server_cpu * 1000 / len(latencies), 2), round(server_cpu / elapsed, 2))


@dataclass
class ExportResult:
    mode: str
    records: int
    pages: int
    seconds: float
    records_per_second: float
    megabytes: float
    megabytes_per_second: float
    verified_signatures: int


def run_export(mode: str, base: str, signer: RequestSigner, args: argparse.Namespace) -> ExportResult:
    url = f"{base}/v1/data/query"
    keys = jwks_keys(httpx.get(f"{base}/.well-known/jwks.json").json()) if mode == "signed" else {}
    records = pages = size = verified = 0
    cursor: str | None = None
    with httpx.Client(timeout=300) as client:
        started = time.perf_counter()
        while True:
            body = orjson.dumps({**EXPORT_QUERY, "page_size": args.page_size, "cursor": cursor})
            headers = signer.headers("POST", url, body)
            response = client.post(url, content=body, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"{mode} export refused ({response.status_code}): {response.text[:300]}")
            if mode == "signed":
                verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
                verified += 1
            page = orjson.loads(response.content)
            records += len(page["data"])
            size += len(response.content)
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        elapsed = time.perf_counter() - started
    megabytes = size / 1e6
    return ExportResult(mode, records, pages, round(elapsed, 3), round(records / elapsed, 1), round(megabytes, 2),
                        round(megabytes / elapsed, 2), verified)


# --- main ---------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--requests", type=int, default=3000, help="timed small queries per mode")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--small-records", type=int, default=1000)
    parser.add_argument("--export-records", type=int, default=100_000)
    parser.add_argument("--page-size", type=int, default=5000)
    parser.add_argument("--query-layer", choices=["sharing", "fixed"], default="sharing",
                        help="the real QueryService, or fixed answers (the API layer alone; no export)")
    parser.add_argument("--log-level", default="WARNING",
                        help="the server's CITYGOV_LOG_LEVEL (INFO: one JSON line per request, the served default)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="citygov-api-bench-") as tmp, database(args.database, Path(tmp)) as url:
        data_dir = Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, database_url=url, master_key=MASTER_KEY,
                            dev_mode=False)
        print(f"preparing {args.database}: {args.small_records + args.export_records} entities …", flush=True)
        signers = prepare(settings, args.small_records, args.export_records)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYGOV_")}
        env.update({"CITYGOV_DATA_DIR": str(data_dir), "CITYGOV_DATABASE_URL": url, "CITYGOV_MASTER_KEY": MASTER_KEY,
                    "CITYGOV_DEV_MODE": "false", "CITYGOV_LOG_LEVEL": args.log_level, "PYTHONPATH": str(ROOT),
                    "CITYGOV_QUERY_MAX_PAGE_SIZE": str(args.page_size)})
        small: list[LoadResult] = []
        exports: list[ExportResult] = []
        env["BENCH_QUERY_LAYER"] = args.query_layer
        for mode, target in (("signed", "benchmarks.api:signed_app"), ("unsigned", "benchmarks.api:unsigned_app")):
            with server(target, env, args.workers) as (base, pid):
                print(f"{mode}: {args.requests} small queries, {args.concurrency} connections, "
                      f"{args.workers} worker(s) …", flush=True)
                small.append(run_small(mode, base, pid, signers["transport"], args))
                if args.export_records and args.query_layer == "sharing":
                    print(f"{mode}: exporting {args.export_records} records …", flush=True)
                    exports.append(run_export(mode, base, signers["university-mobility-lab"], args))

    signed, unsigned = small
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "small_queries": [asdict(r) for r in small],
        "ratio_unsigned_over_signed": round(unsigned.per_second / signed.per_second, 2),
        "export": [asdict(e) for e in exports],
    }
    if len(exports) == 2:
        report["export_ratio_unsigned_over_signed"] = round(
            exports[1].records_per_second / exports[0].records_per_second, 2)
    print()
    print(f"{'mode':<9} {'req':>6} {'err':>4} {'req/s':>8} {'/worker':>8} {'p50 ms':>7} {'p90 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'client':>6} {'srv cpu ms/req':>14} {'srv cores':>9}")
    for r in small:
        print(f"{r.mode:<9} {r.requests:>6} {r.errors:>4} {r.per_second:>8} {r.per_second_per_worker:>8} "
              f"{r.p50_ms:>7} {r.p90_ms:>7} {r.p99_ms:>7} {r.max_ms:>7} {r.client_cpu_cores:>6} "
              f"{r.server_cpu_ms_per_request:>14} {r.server_cpu_cores:>9}")
    print(f"unsigned/signed throughput ratio: {report['ratio_unsigned_over_signed']}")
    for e in exports:
        print(f"export {e.mode:<9} {e.records} records in {e.pages} pages, {e.seconds} s: {e.records_per_second} "
              f"records/s, {e.megabytes} MB ({e.megabytes_per_second} MB/s), {e.verified_signatures} signatures "
              "verified")
    if "export_ratio_unsigned_over_signed" in report:
        print(f"export unsigned/signed ratio: {report['export_ratio_unsigned_over_signed']}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"api-{args.database}-w{args.workers}.json"
        path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"written {path}")


if __name__ == "__main__":
    main()
