"""One write transaction per data request (SQLite and PostgreSQL): the ``jti``, the policy decision entry and the
request's own entry commit together, the signed answer names the decision entry, replays racing each other are
refused, a failure inside the transaction leaves nothing behind, and denials are recorded."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select, text

from governance.anonymize import tables as _budget_tables  # noqa: F401  (registers the ledger table)
from governance.api.app import create_app
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.api.tables import REQUEST_ID
from governance.audit.log import AuditLog
from governance.audit.verify import verify_log
from governance.config import Settings
from governance.sharing import tables as _sharing_tables  # noqa: F401  (registers the register's tables)
from governance.sharing.quota import RequestQuota
from governance.store.db import init_schema
from tests.governance.api.support import (
    QUERY_PATH,
    QUERY_URL,
    StandInQuery,
    StandInQueryService,
    StandInRequester,
    StandInResult,
    audit_entries,
    register,
    stand_in_backend,
)
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import store, terms, traffic

USE_QUERY = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
                          "fields": ["id", "type", "intensity"]})


@pytest.fixture
def client(api_settings: Settings, engine: Engine, clock: Clock) -> Iterator[TestClient]:
    """The app over the real query layer (its decisions go to the audit log)."""
    init_schema(engine)
    with TestClient(create_app(api_settings, engine=engine, clock=clock)) as test_client:
        yield test_client


class CommitCounter:
    """Counts the transactions committed on an engine (SQLAlchemy's own ``commit`` event)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.commits = 0

    def __enter__(self) -> CommitCounter:
        event.listen(self.engine, "commit", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "commit", self._count)

    def _count(self, _conn: Any) -> None:
        self.commits += 1


def jti_of(token: str) -> str:
    return str(orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"])


def recorded_jtis(engine: Engine, jti: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(REQUEST_ID).where(REQUEST_ID.c.jti == jti))
                   .scalar_one())


def audit_of(client: TestClient) -> AuditLog:
    audit: AuditLog = client.app.state.api.audit  # type: ignore[attr-defined]
    return audit


def test_an_allowed_request_writes_once_and_its_answer_names_its_decision(client: TestClient, engine: Engine,
                                                                          clock: Clock) -> None:
    state = client.app.state.api  # type: ignore[attr-defined]
    transport = register(state.registry, "transport", clock=clock)
    store(engine, traffic(4))
    audit = audit_of(client)
    before = len(audit_entries(audit))
    token = transport.signer.token("POST", QUERY_URL, USE_QUERY)
    with CommitCounter(engine) as counter:
        response = client.post(QUERY_PATH, content=USE_QUERY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert counter.commits == 1  # jti, decision entry, request entry: one transaction
    decision, request = audit_entries(audit)[before:]
    meta = response.json()["meta"]
    assert decision["action"] == "policy.decision" and decision["decision"] == "allow"
    assert meta["decision_id"] == str(decision["seq"]) and request["seq"] == decision["seq"] + 1
    assert request["action"] == "data.request" and request["refs"]["decision_id"] == meta["decision_id"]
    assert request["refs"]["jti"] == jti_of(token) and recorded_jtis(engine, jti_of(token)) == 1
    header = verify_response(response.headers[SIGNATURE_HEADER], response.content,
                             jwks_keys(client.get("/.well-known/jwks.json").json()))
    assert header["decision_id"] == meta["decision_id"]
    # the body the caller got is the body the log names, byte for byte (meta encoded inside the transaction)
    assert request["refs"]["response_sha256"] == hashlib.sha256(response.content).hexdigest()
    assert orjson.dumps(orjson.loads(response.content)) == response.content
    assert verify_log(engine, audit.public_key).entries == request["seq"] + 1


def test_a_denial_is_recorded_with_its_decision_in_the_same_transaction(client: TestClient, engine: Engine,
                                                                        clock: Clock) -> None:
    state = client.app.state.api  # type: ignore[attr-defined]
    lab = register(state.registry, "university-mobility-lab", kind="external", clock=clock)
    store(engine, traffic(3))
    body = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "research.mobility", "fields": ["id"]})
    audit = audit_of(client)
    before = len(audit_entries(audit))
    token = lab.signer.token("POST", QUERY_URL, body)
    with CommitCounter(engine) as counter:
        response = client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403, response.text
    # the sharing stage claims its jti first (its own transaction), then decision and request entry together
    assert counter.commits == 2
    decision, request = audit_entries(audit)[before:]
    error = response.json()
    assert decision["action"] == "policy.decision" and decision["decision"] == "deny"
    assert error["decision_id"] == str(decision["seq"]) == request["refs"]["decision_id"]
    assert request["decision"] == "deny" and request["reasons"] == error["reasons"]
    header = verify_response(response.headers[SIGNATURE_HEADER], response.content,
                             jwks_keys(client.get("/.well-known/jwks.json").json()))
    assert header["decision_id"] == error["decision_id"]
    assert client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    verify_log(engine, audit.public_key)


def test_a_replay_of_a_sharing_request_spends_no_quota(client: TestClient, engine: Engine, clock: Clock) -> None:
    state = client.app.state.api  # type: ignore[attr-defined]
    state.backend.service.agreements.add(terms("dsa-t-quota", quota_per_day=5), actor="test:officer")
    office = register(state.registry, "stats-office", kind="external", clock=clock)
    store(engine, traffic(3))
    body = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                         "agreement": "dsa-t-quota", "fields": ["id", "intensity"]})
    token = office.signer.token("POST", QUERY_URL, body)
    assert client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert RequestQuota(engine).used("dsa-t-quota", clock()) == 1
    assert audit_entries(audit_of(client))[-1]["reasons"] == ["jti_replayed"]


def test_a_failure_inside_the_transaction_leaves_nothing_behind(client: TestClient, engine: Engine,
                                                                clock: Clock) -> None:
    """The request's entry cannot be written (a database trigger refuses it): 503, nothing released, and
    neither its jti nor its decision entry is left in the database; the same token then works."""
    state = client.app.state.api  # type: ignore[attr-defined]
    transport = register(state.registry, "transport", clock=clock)
    store(engine, traffic(4))
    audit = audit_of(client)
    head = audit.head()
    assert head is not None
    token = transport.signer.token("POST", QUERY_URL, USE_QUERY)
    with refusing_request_entries(engine):
        response = client.post(QUERY_PATH, content=USE_QUERY, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503 and response.json()["error"] == "audit_unavailable"
    assert "tf-" not in response.text and "data" not in response.json()
    after = audit.head()
    assert after is not None and after.tree_size == head.tree_size  # no decision entry, no request entry
    assert recorded_jtis(engine, jti_of(token)) == 0
    verify_log(engine, audit.public_key)
    retry = client.post(QUERY_PATH, content=USE_QUERY, headers={"Authorization": f"Bearer {token}"})
    assert retry.status_code == 200, retry.text
    entries = audit_entries(audit)
    assert [e["action"] for e in entries[head.tree_size:]] == ["policy.decision", "data.request"]
    assert verify_log(engine, audit.public_key).entries == head.tree_size + 2


class RacingQueryService(StandInQueryService):
    """The stand-in query layer, holding each request until ``parties`` requests are inside it at once: both
    copies of a token have then passed every check before either is recorded."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=20)

    def run(self, requester: StandInRequester, request: StandInQuery) -> StandInResult:
        self.barrier.wait()
        return super().run(requester, request)


def test_a_token_sent_twice_at_once_to_two_servers_is_answered_once(
        api_settings: Settings, engine: Engine, second_engine: Engine, clock: Clock) -> None:
    body = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "page_size": 3})
    service = RacingQueryService(2)
    apps = [create_app(api_settings, backend=stand_in_backend(service), engine=eng, clock=clock)
            for eng in (engine, second_engine)]
    with TestClient(apps[0]) as first, TestClient(apps[1]) as second:
        energy = register(apps[0].state.api.registry, "energy", clock=clock)
        audit = audit_of(first)
        for _ in range(3):
            token = energy.signer.token("POST", QUERY_URL, body)
            responses: list[Any] = [None, None]

            def send(index: int, client: TestClient, token: str = token, responses: list[Any] = responses) -> None:
                responses[index] = client.post(QUERY_PATH, content=body, headers={"Authorization": f"Bearer {token}"})

            threads = [threading.Thread(target=send, args=(i, c)) for i, c in enumerate((first, second))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(r.status_code for r in responses) == [200, 401]
            refused = next(r for r in responses if r.status_code == 401)
            assert "SL-" not in refused.text and "data" not in refused.json()
            entries = [e for e in audit_entries(audit) if e["refs"].get("request_id") in {
                r.headers["X-Request-ID"] for r in responses}]
            assert sorted((e["action"], tuple(e["reasons"])) for e in entries) == [
                ("auth.failed", ("jti_replayed",)), ("data.request", ())]
            assert recorded_jtis(engine, jti_of(token)) == 1
    verify_log(engine, audit.public_key)


class refusing_request_entries:  # noqa: N801  (a context manager named for what it does)
    """A database trigger that makes every insert of a ``data.request`` audit entry fail, while it is installed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text(
                    "CREATE FUNCTION refuse_request_entry() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'request entries refused'; END $$"))
                conn.execute(text(
                    "CREATE TRIGGER refuse_request_entry BEFORE INSERT ON audit_entry FOR EACH ROW "
                    "WHEN (NEW.action = 'data.request') EXECUTE FUNCTION refuse_request_entry()"))
            else:
                conn.execute(text(
                    "CREATE TRIGGER refuse_request_entry BEFORE INSERT ON audit_entry "
                    "WHEN NEW.action = 'data.request' BEGIN SELECT RAISE(ABORT, 'request entries refused'); END"))

    def __exit__(self, *_: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_request_entry" + (
                " ON audit_entry" if conn.dialect.name == "postgresql" else "")))
            if conn.dialect.name == "postgresql":
                conn.execute(text("DROP FUNCTION refuse_request_entry()"))
