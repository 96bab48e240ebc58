"""The consent API router through FastAPI's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the API dependencies (fastapi, httpx) are not installed")

from fastapi import FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from governance.consent.registry import ConsentRegistry
from governance.consent.router import consent_router, unsafe_no_authentication
from tests.governance.protect.support import Clock

RESIDENT = "urn:ngsi-ld:Person:R-55812"
GRANT: dict[str, Any] = {
    "subject_id": RESIDENT, "controller": "City Social Care", "purposes": ["care.alerting", "care.wellbeing"],
    "recipients": ["dept:emergency"], "legal_basis": "explicit-consent", "special_categories": ["health"],
    "collection_method": "paper form",
}
pytestmark = pytest.mark.filterwarnings("ignore:the consent API is mounted without authentication")


@pytest.fixture
def client(registry: ConsentRegistry) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(consent_router(lambda: registry, authenticate=unsafe_no_authentication), prefix="/consents")
    with TestClient(app) as test_client:
        yield test_client


def test_grant_show_renew_withdraw_and_every_receipt(client: TestClient, registry: ConsentRegistry,
                                                      clock: Clock) -> None:
    answer = client.post("/consents", json=GRANT)
    assert answer.status_code == 201
    granted = answer.json()
    consent_id, pseudonym = granted["consent"]["consent_id"], granted["consent"]["subject"]
    assert pseudonym == registry.pseudonyms.of(RESIDENT) and "R-55812" not in answer.text
    assert granted["consent"]["status"] == "active"

    clock.advance(days=1)
    until = (clock.now + timedelta(days=365)).isoformat()
    renewed = client.post(f"/consents/{consent_id}/renew", json={"valid_until": until, "reason": "annual review"})
    assert renewed.status_code == 200 and renewed.json()["consent"]["seq"] == 2
    clock.advance(days=1)
    withdrawn = client.post(f"/consents/{consent_id}/withdraw", json={"reason": "moved away"})
    assert withdrawn.status_code == 200 and withdrawn.json()["consent"]["status"] == "withdrawn"

    shown = client.get(f"/consents/{consent_id}").json()
    assert shown["status_now"] == "withdrawn" and [e["event"] for e in shown["history"]] == [
        "grant", "renew", "withdraw"]
    assert [e["actor"] for e in shown["history"]] == ["unauthenticated"] * 3

    receipts = client.get(f"/consents/{consent_id}/receipts").json()
    assert [r["receipt"] for r in receipts] == [granted["receipt"], renewed.json()["receipt"],
                                                withdrawn.json()["receipt"]]
    one = client.get(f"/consents/{consent_id}/receipts/{receipts[1]['receipt_id']}").json()
    assert one["event"] == "renew" and one["receipt"] == renewed.json()["receipt"]
    for r in receipts:
        verified = client.post("/consents/receipts/verify", json={"receipt": r["receipt"]})
        assert verified.status_code == 200 and verified.json()["claims"]["sub"] == pseudonym
    assert set(client.get("/consents/receipt-keys").json()) == set(registry.receipt_public_keys())


def test_listing_keeps_real_ids_out_of_urls(client: TestClient, registry: ConsentRegistry, clock: Clock) -> None:
    first = client.post("/consents", json=GRANT).json()["consent"]
    clock.advance(seconds=1)  # the list is ordered by grant time: the first grant comes first
    client.post("/consents", json={**GRANT, "subject_id": "urn:ngsi-ld:Person:R-60344", "purposes": ["care.alerting"]})
    client.post(f"/consents/{first['consent_id']}/withdraw", json={})

    assert client.get("/consents", params={"subject": RESIDENT}).status_code == 422
    mine = client.get("/consents", params={"subject": first["subject"]}).json()
    assert [c["consent_id"] for c in mine] == [first["consent_id"]]
    found = client.post("/consents/search", json={"subject_id": RESIDENT}).json()
    assert [c["consent_id"] for c in found] == [first["consent_id"]]
    active = client.get("/consents", params={"status": "active", "purpose": "care.alerting"}).json()
    assert len(active) == 1 and active[0]["subject"] == registry.pseudonyms.of("urn:ngsi-ld:Person:R-60344")
    assert client.get("/consents", params={"limit": 1}).json()[0]["consent_id"] == first["consent_id"]


def test_errors_are_clear_http_answers(client: TestClient) -> None:
    assert client.post("/consents", json={**GRANT, "legal_basis": "consent"}).status_code == 422  # health needs more
    assert client.get("/consents/no-such-consent").status_code == 404
    assert client.get("/consents/no-such-consent/receipts").status_code == 404
    consent_id = client.post("/consents", json=GRANT).json()["consent"]["consent_id"]
    assert client.get(f"/consents/{consent_id}/receipts/nope").status_code == 404
    assert client.post(f"/consents/{consent_id}/withdraw", json={}).status_code == 200
    again = client.post(f"/consents/{consent_id}/withdraw", json={})
    assert again.status_code == 409 and "already withdrawn" in again.json()["detail"]
    assert client.post(f"/consents/{consent_id}/renew", json={"valid_until": None}).status_code == 409
    assert client.post(f"/consents/{consent_id}/renew", json={"valid_until": "2030-01-01T00:00:00"}).status_code == 422
    forged = client.post("/consents/receipts/verify", json={"receipt": "eyJhbGciOiJub25lIn0.e30."})
    assert forged.status_code == 422 and forged.json()["detail"]["valid"] is False


def test_without_a_caller_nothing_is_served(registry: ConsentRegistry) -> None:
    def bearer(authorization: str | None = Header(default=None)) -> str:
        if authorization != "Bearer agency-token":
            raise HTTPException(401, "unknown caller")
        return "agency:home-care"

    app = FastAPI()
    app.include_router(consent_router(lambda: registry, authenticate=bearer), prefix="/consents")
    with TestClient(app) as client:
        assert client.get("/consents").status_code == 401
        assert client.post("/consents", json=GRANT).status_code == 401
        assert client.get("/consents/receipt-keys").status_code == 401
        ok = client.post("/consents", json=GRANT, headers={"Authorization": "Bearer agency-token"})
        assert ok.status_code == 201 and ok.json()["consent"]["seq"] == 1
    assert registry.get(ok.json()["consent"]["consent_id"]).history[0].actor == "agency:home-care"
