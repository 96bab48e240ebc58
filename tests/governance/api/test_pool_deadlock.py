"""No request waits for the process writer lock, or for a second pooled connection, while it holds a pooled
connection (SQLite and PostgreSQL): with a pool of two connections and no overflow, concurrent valid queries,
forged ones (auth failures, each audited) and sharing-stage queries (their ``jti`` claimed first) are all answered
well inside the pool timeout, and every one of them is recorded.

Before the fix a forged request kept the connection of its key lookup while it waited for the writer lock and
then for another connection to write its ``auth.failed`` entry (and a sharing-stage request kept it for its
``jti`` claim): two such requests held the whole pool and each waited for a connection the other held, until
the pool timeout failed them — unaudited."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from governance.anonymize import tables as _budget_tables  # noqa: F401  (registers the ledger table)
from governance.api.app import create_app
from governance.audit.log import writer_lock
from governance.config import Settings
from governance.sharing import tables as _sharing_tables  # noqa: F401  (registers the register's tables)
from governance.sharing.quota import RequestQuota
from governance.store.db import create_db_engine, init_schema
from tests.governance.api.support import QUERY_PATH, QUERY_URL, audit_entries, register
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import grant, observation, store, terms, traffic

POOL_TIMEOUT = 2.0
USE_QUERY = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
                          "fields": ["id", "intensity"]})
SHARING_QUERY = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                              "agreement": "dsa-pool", "fields": ["id", "intensity"]})


@pytest.fixture
def small_pool(api_settings: Settings, engine: Engine) -> Iterator[Engine]:
    """The test database through a pool of two connections, no overflow, a short timeout."""
    eng = create_db_engine(api_settings.resolved_database_url(), pool_size=2, max_overflow=0,
                           pool_timeout=POOL_TIMEOUT)
    init_schema(eng)
    yield eng
    eng.dispose()


def forged(token: str) -> str:
    """The token with its signature's first character changed: the key is found, the signature fails."""
    head, payload, signature = token.split(".")
    return ".".join((head, payload, ("B" if signature[0] == "A" else "A") + signature[1:]))


def send_all(client: TestClient, small_pool: Engine, requests: list[tuple[str, bytes, str, int]], *,
             hold_writer_lock: bool) -> list[tuple[int, float]]:
    """Send ``requests`` (kind, body, token, expected status) at once; each one's status and how long it took.

    ``hold_writer_lock``: another writer of this process (a sweep, a router's write) holds the SQLite writer lock
    while they start, so every query goes to a worker thread and takes its read connection before the lock."""
    lock = writer_lock(small_pool)
    holding = hold_writer_lock and lock is not None
    start = threading.Barrier(len(requests) + (1 if holding else 0), timeout=10)

    def send(request: tuple[str, bytes, str, int]) -> tuple[int, float]:
        start.wait()
        began = time.monotonic()
        response = client.post(QUERY_PATH, content=request[1], headers={"Authorization": f"Bearer {request[2]}"})
        return response.status_code, time.monotonic() - began

    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(send, r) for r in requests]
        if holding:
            assert lock is not None
            with lock:
                start.wait()
                time.sleep(0.3)  # the requests take their connections and reach the lock meanwhile
        return [f.result(timeout=6 * POOL_TIMEOUT) for f in futures]


@pytest.mark.parametrize("hold_writer_lock", [False, True], ids=["free", "writer-busy"])
def test_a_small_pool_answers_and_audits_every_concurrent_request(
        api_settings: Settings, small_pool: Engine, clock: Clock, hold_writer_lock: bool) -> None:
    app = create_app(api_settings, engine=small_pool, clock=clock)
    state: Any = app.state.api
    with TestClient(app) as client:
        transport = register(state.registry, "transport", clock=clock)
        office = register(state.registry, "stats-office", kind="external", clock=clock)
        state.backend.service.agreements.add(terms("dsa-pool"), actor="test:officer")
        store(small_pool, traffic(3))
        before = len(audit_entries(state.audit))
        requests: list[tuple[str, bytes, str, int]] = []
        for _ in range(4):
            requests.append(("use", USE_QUERY, transport.signer.token("POST", QUERY_URL, USE_QUERY), 200))
            requests.append(("forged", USE_QUERY,
                             forged(transport.signer.token("POST", QUERY_URL, USE_QUERY)), 401))
            requests.append(("sharing", SHARING_QUERY, office.signer.token("POST", QUERY_URL, SHARING_QUERY),
                             200))
            requests.append(("forged", SHARING_QUERY,
                             forged(office.signer.token("POST", QUERY_URL, SHARING_QUERY)), 401))
        results = send_all(client, small_pool, requests, hold_writer_lock=hold_writer_lock)

    statuses = [status for status, _ in results]
    assert statuses == [expected for *_, expected in requests]
    slowest = max(took for _, took in results)
    assert slowest < POOL_TIMEOUT, f"a request waited {slowest:.1f} s: the pool timed out"
    entries = audit_entries(state.audit)[before:]
    failures = [e for e in entries if e["action"] == "auth.failed"]
    assert len(failures) == sum(1 for kind, *_ in requests if kind == "forged")
    assert {e["reasons"][0] for e in failures} == {"signature_invalid"}
    answered = [e for e in entries if e["action"] == "data.request"]
    assert len(answered) == sum(1 for kind, *_ in requests if kind != "forged")


@pytest.mark.parametrize("hold_writer_lock", [False, True], ids=["free", "writer-busy"])
def test_a_small_pool_answers_concurrent_requests_under_a_quota(
        api_settings: Settings, small_pool: Engine, clock: Clock, hold_writer_lock: bool) -> None:
    # the request quota's write (like the privacy budget's) gives the request's read connection back first
    app = create_app(api_settings, engine=small_pool, clock=clock)
    state: Any = app.state.api
    with TestClient(app) as client:
        office = register(state.registry, "stats-office", kind="external", clock=clock)
        state.backend.service.agreements.add(terms("dsa-quota", quota_per_day=100), actor="test:officer")
        store(small_pool, traffic(3))
        body = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                             "agreement": "dsa-quota", "fields": ["id", "intensity"]})
        requests = [("sharing", body, office.signer.token("POST", QUERY_URL, body), 200) for _ in range(8)]
        results = send_all(client, small_pool, requests, hold_writer_lock=hold_writer_lock)
    assert [status for status, _ in results] == [200] * len(requests)
    assert max(took for _, took in results) < POOL_TIMEOUT
    assert RequestQuota(small_pool).used("dsa-quota", clock()) == len(requests)


CARE_QUERY = orjson.dumps({"dataset": "care.observation", "purpose": "care.monitoring", "agreement": "dsa-2026-004",
                           "fields": ["id", "type", "numValue", "refResident", "dateObserved"]})


@pytest.mark.parametrize("hold_writer_lock", [False, True], ids=["free", "writer-busy"])
def test_a_small_pool_answers_concurrent_queries_that_look_up_consents_and_subject_keys(
        api_settings: Settings, small_pool: Engine, clock: Clock, hold_writer_lock: bool) -> None:
    # a query of personal data reads the subjects' consents and their data keys (to open the released sealed
    # fields) on the request's one read connection: before, each took a second pooled connection while it held it
    app = create_app(api_settings, engine=small_pool, clock=clock)
    state: Any = app.state.api
    service = state.backend.service
    with TestClient(app) as client:
        gp = register(state.registry, "gp-practice-centro", kind="external", clock=clock)
        store(small_pool, [observation(n, resident, 60.0 + resident) for resident in (1, 2, 3) for n in range(3)],
              service.protector)
        grant(service.consent, 1, "gp-practice-centro")
        grant(service.consent, 2, "gp-practice-centro")
        requests = [("care", CARE_QUERY, gp.signer.token("POST", QUERY_URL, CARE_QUERY), 200) for _ in range(8)]
        results = send_all(client, small_pool, requests, hold_writer_lock=hold_writer_lock)
        answer = client.post(QUERY_PATH, content=CARE_QUERY,
                             headers={"Authorization": f"Bearer {gp.signer.token('POST', QUERY_URL, CARE_QUERY)}"})
    assert [status for status, _ in results] == [200] * len(requests)
    slowest = max(took for _, took in results)
    assert slowest < POOL_TIMEOUT, f"a request waited {slowest:.1f} s: the pool timed out"
    assert answer.status_code == 200, answer.text
    assert sorted(r["numValue"] for r in answer.json()["data"]) == [61.0] * 3 + [62.0] * 3
    answered = [e for e in audit_entries(state.audit) if e["action"] == "data.request"]
    # every one released the six observations of the two consenting residents (a failed consent lookup is a "no")
    assert [e["refs"]["records"] for e in answered] == [6] * (len(requests) + 1)
