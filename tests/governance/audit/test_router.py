"""The audit API router, through FastAPI's test client: what a client gets verifies with the published key."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the API dependencies (fastapi, httpx) are not installed")

from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from governance.audit.keys import PublicKey
from governance.audit.log import AuditLog
from governance.audit.merkle import verify_consistency, verify_inclusion
from governance.audit.router import audit_router, unsafe_no_authentication
from governance.audit.treehead import TreeHead
from tests.governance.audit.conftest import request


def hashes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.fixture
def client(audit_log: AuditLog) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(audit_router(lambda: audit_log, authenticate=unsafe_no_authentication), prefix="/audit")
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.filterwarnings("ignore:the audit API is mounted without authentication")
def test_what_the_api_serves_verifies_with_the_published_key(client: TestClient, audit_log: AuditLog) -> None:
    assert client.get("/audit/tree-head").status_code == 404
    audit_log.append([request(n) for n in range(9)])
    saved = TreeHead.from_json(client.get("/audit/tree-head").json())  # an auditor's checkpoint
    audit_log.append([request(n) for n in range(9, 17)])

    key = client.get("/audit/public-key").json()
    public = PublicKey(base64.b64decode(key["public_key"]))
    assert public == PublicKey.from_text(key["pem"]) and public.key_id == key["key_id"]
    head = TreeHead.from_json(client.get("/audit/tree-head").json())
    head.check(public)
    saved.check(public)
    assert (saved.tree_size, head.tree_size) == (9, 17)

    entries = client.get("/audit/entries", params={"decision": "deny", "limit": 10}).json()
    assert [e["seq"] for e in entries] == [0, 5, 10, 15]
    assert [e["seq"] for e in client.get("/audit/entries", params={"subject": "urn:ngsi-ld:Person:R-1"}).json()] == [5]
    one = client.get("/audit/entries/10").json()
    assert one["leaf_hash"] == entries[2]["leaf_hash"]

    proof = client.get("/audit/proofs/inclusion", params={"seq": 10}).json()
    assert proof["tree_size"] == 17 and proof["leaf_hash"] == one["leaf_hash"]
    verify_inclusion(10, 17, bytes.fromhex(proof["leaf_hash"]), hashes(proof["hashes"]), head.root_hash)
    consistency = client.get("/audit/proofs/consistency", params={"first": 9}).json()
    verify_consistency(9, 17, saved.root_hash, head.root_hash, hashes(consistency["hashes"]))


@pytest.mark.filterwarnings("ignore:the audit API is mounted without authentication")
def test_unknown_entries_and_sizes_are_404(client: TestClient, audit_log: AuditLog) -> None:
    audit_log.append([request(0), request(1)])
    assert client.get("/audit/entries/2").status_code == 404
    assert client.get("/audit/proofs/inclusion", params={"seq": 2}).status_code == 404
    assert client.get("/audit/proofs/consistency", params={"first": 1, "second": 3}).status_code == 404
    assert client.get("/audit/entries", params={"since": "2026-11-20T10:00:00"}).status_code == 422


def test_the_authentication_dependency_guards_every_route(audit_log: AuditLog) -> None:
    def only_auditors(x_auditor: str | None = Header(default=None)) -> str:
        if x_auditor != "alice":
            raise HTTPException(401, "unknown caller")
        return x_auditor

    app = FastAPI()
    app.include_router(audit_router(lambda: audit_log, authenticate=only_auditors), prefix="/audit")
    with TestClient(app) as test_client:
        for path in ("/audit/entries", "/audit/tree-head", "/audit/public-key", "/audit/proofs/consistency?first=0"):
            assert test_client.get(path).status_code == 401
        assert test_client.get("/audit/public-key", headers={"X-Auditor": "alice"}).status_code == 200


def test_mounting_without_authentication_warns(audit_log: AuditLog) -> None:
    app = FastAPI()
    app.include_router(audit_router(lambda: audit_log, authenticate=unsafe_no_authentication), prefix="/audit")
    with TestClient(app) as test_client, pytest.warns(UserWarning, match="without authentication"):
        assert test_client.get("/audit/public-key").status_code == 200
