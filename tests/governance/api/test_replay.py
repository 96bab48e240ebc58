"""Replays are refused across restarts and across server processes sharing one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

import orjson
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from governance.api.app import create_app
from governance.api.replay import ReplayStore
from governance.api.tables import REQUEST_ID
from governance.config import Settings
from governance.store.db import create_db_engine
from tests.governance.api.support import (
    QUERY_PATH,
    QUERY_URL,
    StandInQueryService,
    audit_entries,
    register,
    stand_in_backend,
)
from tests.governance.protect.support import Clock

BODY = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "page_size": 3})


def app_on(settings: Settings, engine: Engine, clock: Clock) -> TestClient:
    return TestClient(create_app(settings, backend=stand_in_backend(StandInQueryService()), engine=engine,
                                 clock=clock))


def test_a_jti_is_accepted_once_by_all_servers_and_after_a_restart(
        api_settings: Settings, engine: Engine, second_engine: Engine, clock: Clock) -> None:
    with app_on(api_settings, engine, clock) as first, app_on(api_settings, second_engine, clock) as second:
        registry = first.app.state.api.registry  # type: ignore[attr-defined]
        energy = register(registry, "energy", clock=clock)
        token = energy.signer.token("POST", QUERY_URL, BODY)
        headers = {"Authorization": f"Bearer {token}"}
        assert first.post(QUERY_PATH, content=BODY, headers=headers).status_code == 200
        assert second.post(QUERY_PATH, content=BODY, headers=headers).status_code == 401
        assert first.post(QUERY_PATH, content=BODY, headers=headers).status_code == 401
        # the other server knows the caller too: registrations are shared, not per process
        fresh = energy.signer.headers("POST", QUERY_URL, BODY)
        assert second.post(QUERY_PATH, content=BODY, headers=fresh).status_code == 200
        audit = first.app.state.api.audit  # type: ignore[attr-defined]
        assert [e["reasons"] for e in audit_entries(audit) if e["action"] == "auth.failed"] == [
            ["jti_replayed"], ["jti_replayed"]]
    # a restart: a new app on a new engine, same database
    restarted_engine = create_db_engine(api_settings.resolved_database_url())
    try:
        with app_on(api_settings, restarted_engine, clock) as restarted:
            assert restarted.post(QUERY_PATH, content=BODY, headers=headers).status_code == 401
    finally:
        restarted_engine.dispose()


def test_racing_claims_on_two_engines_let_exactly_one_win(engine: Engine, second_engine: Engine) -> None:
    stores = [ReplayStore(engine), ReplayStore(second_engine)]
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def claim(index: int) -> None:
        barrier.wait()
        won = stores[index % 2].claim("energy", "same-jti", 2_000_000_000)
        with lock:
            results.append(won)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_ids_are_per_issuer_and_expired_ones_are_purged(engine: Engine) -> None:
    store = ReplayStore(engine)
    assert store.claim("energy", "j-1", 1000)
    assert store.claim("transport", "j-1", 1000)  # another issuer's id space
    assert not store.claim("energy", "j-1", 5000)
    assert store.claim("energy", "j-2", 3000)
    assert store.purge(999) == 0
    assert store.purge(2000) == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(REQUEST_ID)).scalar_one() == 1
    assert store.claim("energy", "j-1", 9000)  # purged ids are long expired: their tokens fail on exp anyway


def test_the_stored_expiry_covers_exp_plus_the_skew(api_settings: Settings, engine: Engine, clock: Clock) -> None:
    with app_on(api_settings, engine, clock) as client:
        energy = register(client.app.state.api.registry, "energy", clock=clock)  # type: ignore[attr-defined]
        token = energy.signer.token("POST", QUERY_URL, BODY)
        assert client.post(QUERY_PATH, content=BODY, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with engine.connect() as conn:
        (expires_at,) = conn.execute(select(REQUEST_ID.c.expires_at)).one()
    assert expires_at == int(clock().timestamp()) + energy.signer.lifetime + api_settings.api_clock_skew_seconds


def test_the_server_purges_expired_ids_periodically(api_settings: Settings, engine: Engine, clock: Clock) -> None:
    settings = api_settings.model_copy(update={"api_replay_purge_seconds": 1})
    store = ReplayStore(engine)
    now = int(clock().timestamp())
    assert store.claim("energy", "old", now - 1) and store.claim("energy", "current", now + 60)
    with app_on(settings, engine, clock) as client:
        deadline = time.monotonic() + 10
        while "citygov_api_replay_ids_purged_total 1" not in client.get("/metrics").text:
            assert time.monotonic() < deadline, "no purge within 10 s"
            time.sleep(0.2)
    with engine.connect() as conn:
        assert [r.jti for r in conn.execute(select(REQUEST_ID.c.jti))] == ["current"]
