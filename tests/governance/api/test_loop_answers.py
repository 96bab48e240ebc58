"""Where a data query is answered (SQLite and PostgreSQL): on SQLite, on the event loop while this process's writer
lock is free — its reads and its one write transaction then share one pooled connection —, in a worker thread
when another thread holds that lock (the loop keeps answering meanwhile); on PostgreSQL always in a worker thread.
The answers, their signatures and the audit log are the same either way."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, event

from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.audit.log import writer_lock
from governance.audit.verify import verify_log
from governance.config import Settings
from tests.governance.api.support import (
    ApiHarness,
    StandInQuery,
    StandInQueryService,
    StandInRequester,
    StandInResult,
    audit_entries,
    harness,
)
from tests.governance.protect.support import Clock

BODY = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "page_size": 3})


class WhereService(StandInQueryService):
    """The stand-in query layer, noting for each query whether it ran on the event loop's thread."""

    def __init__(self) -> None:
        super().__init__()
        self.on_loop: list[bool] = []

    def run(self, requester: StandInRequester, request: StandInQuery) -> StandInResult:
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:  # no loop runs in this thread: a worker thread
            self.on_loop.append(False)
        return super().run(requester, request)


@pytest.fixture
def where() -> WhereService:
    return WhereService()


@pytest.fixture
def api(api_settings: Settings, engine: Engine, clock: Clock, where: WhereService) -> Iterator[ApiHarness]:
    yield from harness(api_settings, engine, clock, where)


def _checkouts(engine: Engine) -> list[int]:
    seen: list[int] = []
    event.listen(engine, "checkout", lambda *_: seen.append(1))
    return seen


def _verified(api: ApiHarness, response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    keys = jwks_keys(api.client.get("/.well-known/jwks.json").json())
    header: dict[str, Any] = verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
    return header


def test_a_query_is_answered_on_the_loop_on_sqlite_only(api: ApiHarness, engine: Engine, where: WhereService) -> None:
    energy = api.register("energy")
    seen = _checkouts(engine)
    response = api.signed_post(energy, BODY)
    header = _verified(api, response)
    sqlite = engine.dialect.name == "sqlite"
    assert where.on_loop == [sqlite]
    if sqlite:
        assert len(seen) == 1  # the key lookup and the write transaction on one pooled connection
    request = audit_entries(api.audit)[-1]
    assert request["action"] == "data.request" and request["refs"]["jti"] == header["request_jti"]
    assert verify_log(engine, api.audit.public_key).entries == request["seq"] + 1


def test_while_another_thread_writes_a_query_waits_in_a_worker_thread_not_on_the_loop(
        api: ApiHarness, engine: Engine, where: WhereService) -> None:
    lock = writer_lock(engine)
    if lock is None:
        pytest.skip("PostgreSQL has no process writer lock: every query runs in a worker thread")
    energy = api.register("energy")
    held, release = threading.Event(), threading.Event()

    def writer() -> None:  # another thread of this process in the middle of a write (a sweep, a router)
        with lock:
            held.set()
            release.wait(20)

    holder = threading.Thread(target=writer)
    holder.start()
    held.wait(20)
    responses: list[Any] = []
    sender = threading.Thread(target=lambda: responses.append(api.signed_post(energy, BODY)))
    try:
        sender.start()
        for _ in range(100):  # the query has reached its worker thread, which waits for the lock there
            if where.on_loop:
                break
            threading.Event().wait(0.05)
        assert where.on_loop == [False]
        assert api.client.get("/healthz").status_code == 200  # the loop is not waiting for the lock
        assert not responses  # the query still is
    finally:
        release.set()
        holder.join(20)
        sender.join(20)
    _verified(api, responses[0])
    seen = _checkouts(engine)
    _verified(api, api.signed_post(energy, BODY))  # the lock is free again: back on the loop
    assert where.on_loop == [False, True] and len(seen) == 1
    entries = audit_entries(api.audit)
    assert [e["action"] for e in entries[-2:]] == ["data.request", "data.request"]
    assert verify_log(engine, api.audit.public_key).entries == entries[-1]["seq"] + 1


def test_a_failed_write_on_the_loop_releases_the_writer_lock_and_leaves_nothing(
        api: ApiHarness, engine: Engine, where: WhereService, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = writer_lock(engine)
    if lock is None:
        pytest.skip("SQLite only")
    energy = api.register("energy")
    before = audit_entries(api.audit)
    state = api.client.app.state.api  # type: ignore[attr-defined]

    def refuse(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the audit log cannot be written")

    monkeypatch.setattr(state.audit, "append", refuse)
    response = api.signed_post(energy, BODY)
    assert response.status_code == 503 and response.json()["error"] == "audit_unavailable"
    assert "SL-" not in response.text
    monkeypatch.undo()
    assert audit_entries(api.audit) == before
    assert lock.acquire(blocking=False)  # not left held by the loop's thread
    lock.release()
    _verified(api, api.signed_post(energy, BODY))
    assert where.on_loop == [True, True]


def test_queries_on_the_loop_keep_one_connection_from_one_to_the_next(
        api_settings: Settings, engine: Engine, clock: Clock) -> None:
    if writer_lock(engine) is None:
        pytest.skip("SQLite only")
    from fastapi.testclient import TestClient

    from governance.api.app import create_app
    from tests.governance.api.support import register, stand_in_backend

    service = WhereService()
    app = create_app(api_settings, backend=stand_in_backend(service), engine=engine, clock=clock)
    state = app.state.api
    with TestClient(app) as client:
        energy = register(state.registry, "energy", clock=clock)
        seen = _checkouts(engine)
        for _ in range(4):
            signed = energy.signer.headers("POST", "http://testserver/v1/data/query", BODY)
            assert client.post("/v1/data/query", content=BODY, headers=signed).status_code == 200
        assert len(seen) == 1 and service.on_loop == [True] * 4
        kept = state.loop_connection
        assert kept is not None and not kept.in_transaction()
        # the kept connection is lost (the driver reports it gone): the next requests still answer, on a
        # connection that works
        kept.invalidate()
        for _ in range(2):
            signed = energy.signer.headers("POST", "http://testserver/v1/data/query", BODY)
            assert client.post("/v1/data/query", content=BODY, headers=signed).status_code == 200
        again = state.loop_connection
        assert again is not None and not again.invalidated and not again.closed
    assert state.loop_connection is None  # closed when the app stopped
    entries = audit_entries(state.audit)
    assert verify_log(engine, state.audit.public_key).entries == entries[-1]["seq"] + 1


def test_the_data_query_answers_the_same_through_the_framework_stack(api: ApiHarness, engine: Engine) -> None:
    """The app hands ``POST /v1/data/query`` straight to its middleware; without that shortcut the framework's
    stack reaches the same middleware, which answers the route just the same (signed, audited, one request id)."""
    energy = api.register("energy")
    app: Any = api.client.app
    shortcut = app.data_query_path
    assert shortcut is not None
    direct = api.signed_post(energy, BODY, headers={"X-Request-ID": "req-direct"})
    app.data_query_path = None
    try:
        framework = api.signed_post(energy, BODY, headers={"X-Request-ID": "req-framework"})
    finally:
        app.data_query_path = shortcut
    for response, request_id in ((direct, "req-direct"), (framework, "req-framework")):
        header = _verified(api, response)
        assert header["request_id"] == request_id and response.headers["X-Request-ID"] == request_id
        assert response.json()["meta"]["request_id"] == request_id
    assert direct.json()["data"] == framework.json()["data"]
    requests = [e for e in audit_entries(api.audit) if e["action"] == "data.request"]
    assert [e["refs"]["request_id"] for e in requests[-2:]] == ["req-direct", "req-framework"]
    assert api.client.get("/v1/data/query").status_code == 405  # other methods: the framework, as before
