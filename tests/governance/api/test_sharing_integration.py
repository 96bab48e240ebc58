"""The API over the real query layer (governance.sharing.query.QueryService), on SQLite and PostgreSQL:
a signed request is decided by the policies, answered, signed and audited; denials carry reason codes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

pytest.importorskip("governance.sharing.query", reason="the query layer is not in this tree yet")

from governance.anonymize import tables as _budget_tables  # noqa: F401  (registers the ledger table)
from governance.api.app import create_app
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.audit.query import get_entry
from governance.config import Settings
from governance.sharing import tables as _sharing_tables  # noqa: F401  (registers the register's tables)
from governance.store.db import init_schema
from tests.governance.api.support import QUERY_PATH, QUERY_URL, audit_entries, register
from tests.governance.protect.support import Clock
from tests.governance.sharing.conftest import store, traffic


@pytest.fixture
def client(api_settings: Settings, engine: Engine, clock: Clock) -> Iterator[TestClient]:
    init_schema(engine)
    with TestClient(create_app(api_settings, engine=engine, clock=clock)) as test_client:
        yield test_client


def test_a_signed_request_through_the_real_query_layer(client: TestClient, engine: Engine, clock: Clock) -> None:
    state = client.app.state.api  # type: ignore[attr-defined]
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["policy_revision"]
    transport = register(state.registry, "transport", clock=clock)
    store(engine, traffic(5))
    body = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "transport.planning",
                         "fields": ["id", "type", "intensity", "location"]})
    response = client.post(QUERY_PATH, content=body, headers=transport.signer.headers("POST", QUERY_URL, body))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert sorted(r["intensity"] for r in answer["data"]) == [100, 101, 102, 103, 104]
    meta = answer["meta"]
    assert meta["stage"] == "use" and meta["count"] == 5

    header = verify_response(response.headers[SIGNATURE_HEADER], response.content,
                             jwks_keys(client.get("/.well-known/jwks.json").json()))
    assert (header["decision_id"], header["policy_revision"]) == (meta["decision_id"], meta["policy_revision"])
    with engine.connect() as conn:
        decision = get_entry(conn, int(meta["decision_id"]))
    assert decision is not None and decision.fields["action"] == "policy.decision"
    request_entry = audit_entries(state.audit)[-1]
    assert request_entry["action"] == "data.request" and request_entry["actor"] == "department:transport"
    assert request_entry["refs"]["records"] == 5 and request_entry["refs"]["decision_id"] == meta["decision_id"]
    assert request_entry["policy_revision"] == meta["policy_revision"]


def test_an_external_recipient_without_agreement_is_denied_with_reasons(client: TestClient, engine: Engine,
                                                                         clock: Clock) -> None:
    state = client.app.state.api  # type: ignore[attr-defined]
    lab = register(state.registry, "university-mobility-lab", kind="external", clock=clock)
    store(engine, traffic(3))
    body = orjson.dumps({"dataset": "lighting.traffic-flow", "purpose": "research.mobility",
                         "fields": ["id", "intensity"]})
    response = client.post(QUERY_PATH, content=body, headers=lab.signer.headers("POST", QUERY_URL, body))
    assert response.status_code == 403, response.text
    error = response.json()
    assert error["error"] == "access_denied" and error["reasons"] and "data" not in error
    assert "tf-" not in response.text
    last = audit_entries(state.audit)[-1]
    assert last["decision"] == "deny" and last["stage"] == "sharing" and last["refs"]["records"] == 0
