"""The API's happy paths and operations endpoints: signed answers that verify, one audit entry per request,
pagination, request ids, the audit router behind real authentication, health, readiness, metrics, docs."""

from __future__ import annotations

import base64
import hashlib
import re

import jwt
import orjson
import pytest

from governance.api.jose import b64url
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.audit.entries import Action
from tests.governance.api.support import QUERY_PATH, QUERY_URL, ApiHarness, audit_entries


def query(**changes: object) -> bytes:
    body: dict[str, object] = {"dataset": "lighting.streetlight", "purpose": "energy",
                               "fields": ["id", "powerState"], "page_size": 10}
    body.update(changes)
    return orjson.dumps(body)


def test_a_signed_query_gets_signed_records_and_one_audit_entry(api: ApiHarness) -> None:
    energy = api.register("energy", purposes=("energy",))
    before = len(audit_entries(api.audit))
    token = energy.signer.token("POST", QUERY_URL, query())
    response = api.client.post(QUERY_PATH, content=query(), headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    payload = response.json()
    assert [r["id"] for r in payload["data"]] == [f"urn:ngsi-ld:Streetlight:SL-{n}" for n in range(10)]
    assert payload["next_cursor"] == "10"
    meta = payload["meta"]
    assert (meta["count"], meta["decision_id"], meta["policy_revision"], meta["stage"]) == (
        10, "dec-0", "rev-standin", "use")
    assert meta["request_id"] == response.headers["X-Request-ID"]

    jwks = api.client.get("/.well-known/jwks.json")
    assert jwks.headers["content-type"].startswith("application/jwk-set+json")
    (published,) = jwks.json()["keys"]
    assert published["kty"] == "OKP" and published["alg"] == "EdDSA" and "d" not in published
    header = verify_response(response.headers[SIGNATURE_HEADER], response.content, jwks_keys(jwks.json()))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert header["kid"] == published["kid"] and header["request_jti"] == claims["jti"]
    assert (header["decision_id"], header["policy_revision"]) == ("dec-0", "rev-standin")
    assert header["sha256"] == b64url(hashlib.sha256(response.content).digest())

    # it is a standard JWS: put the payload back and any JOSE library verifies it
    protected, _, signature = response.headers[SIGNATURE_HEADER].split(".")
    attached = f"{protected}.{b64url(response.content)}.{signature}"
    key = jwt.PyJWK(published).key
    assert jwt.api_jws.decode_complete(attached, key, algorithms=["EdDSA"])["payload"] == response.content

    entries = audit_entries(api.audit)[before:]
    assert len(entries) == 1
    (entry,) = entries
    assert (entry["action"], entry["actor"], entry["decision"], entry["stage"]) == (
        Action.DATA_REQUEST, "department:energy", "allow", "use")
    assert (entry["dataset"], entry["purpose"], entry["policy_revision"]) == ("lighting.streetlight", "energy",
                                                                              "rev-standin")
    refs = entry["refs"]
    assert refs["records"] == 10 and refs["fields"] == ["id", "powerState"] and refs["decision_id"] == "dec-0"
    assert refs["response_sha256"] == hashlib.sha256(response.content).hexdigest()
    assert refs["jti"] == claims["jti"] and refs["kid"] == energy.kid and refs["status"] == 200
    assert "SL-1" not in orjson.dumps(entry).decode()  # references, never the records


def test_pages_follow_the_cursor_and_the_requester_is_built_from_the_registry(api: ApiHarness) -> None:
    energy = api.register("energy", roles=("analyst",))
    seen: list[str] = []
    cursor = None
    while True:
        response = api.signed_post(energy, query(page_size=10, cursor=cursor))
        assert response.status_code == 200
        seen += [r["id"] for r in response.json()["data"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == api.service.total
    requester, request = api.service.calls[0]
    assert (requester.id, requester.kind, requester.roles) == ("energy", "department", ("analyst",))
    assert request.fields == ["id", "powerState"]


def test_external_recipients_and_es256_keys(api: ApiHarness) -> None:
    institute = api.register("public-health-institute", kind="external", alg="ES256")
    response = api.signed_post(institute, query(purpose="energy"))
    assert response.status_code == 403  # the stand-in lets only energy in, but the caller was authenticated
    last = audit_entries(api.audit)[-1]
    assert last["actor"] == "external:public-health-institute" and last["stage"] == "sharing"
    assert api.service.calls[0][0].kind == "external"


def test_several_active_keys_and_rotation(api: ApiHarness) -> None:
    from governance.api.client import RequestSigner, generate_key, public_of

    energy = api.register("energy")
    new_key = generate_key("ES256")
    api.registry.add_key("energy", public_of(new_key), actor="test:officer")
    rotated = RequestSigner(new_key, public_of(new_key).kid, "energy", clock=api.clock)
    assert api.client.post(QUERY_PATH, content=query(),
                           headers=rotated.headers("POST", QUERY_URL, query())).status_code == 200
    assert api.signed_post(energy, query()).status_code == 200  # the old key still works…
    api.registry.revoke_key("energy", energy.kid, actor="test:officer")
    assert api.signed_post(energy, query()).status_code == 401  # …until it is revoked
    assert api.client.post(QUERY_PATH, content=query(),
                           headers=rotated.headers("POST", QUERY_URL, query())).status_code == 200


def test_request_ids_come_in_and_go_out(api: ApiHarness) -> None:
    energy = api.register("energy")
    response = api.signed_post(energy, query(), headers={"X-Request-ID": "trace-42.a:b"})
    assert response.headers["X-Request-ID"] == "trace-42.a:b"
    assert audit_entries(api.audit)[-1]["refs"]["request_id"] == "trace-42.a:b"
    for bad in ("a" * 200, "has space", "<script>"):
        response = api.signed_post(energy, query(), headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", api.client.get("/healthz").headers["X-Request-ID"])


def test_the_audit_router_needs_a_signed_auditor(api: ApiHarness) -> None:
    auditor = api.register("city-audit", roles=("auditor",))
    energy = api.register("energy")
    response = api.signed_get(auditor, "/v1/audit/entries?limit=2&action=department.change")
    assert response.status_code == 200
    assert [e["refs"]["department"] for e in response.json()] == ["city-audit", "energy"]
    keys = jwks_keys(api.client.get("/.well-known/jwks.json").json())
    verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
    last = audit_entries(api.audit)[-1]
    assert (last["actor"], last["dataset"], last["decision"]) == ("department:city-audit", "audit-log", "allow")
    assert last["refs"]["query_parameters"] == ["action", "limit"]

    denied = api.signed_get(energy, "/v1/audit/tree-head")
    assert denied.status_code == 403 and denied.json()["reasons"] == ["auditor_role_required"]
    assert audit_entries(api.audit)[-1]["decision"] == "deny"
    assert api.client.get("/v1/audit/tree-head").status_code == 401
    assert audit_entries(api.audit)[-1]["action"] == Action.AUTH_FAILED
    # the query string is signed: an auditor's token cannot be reused for other parameters
    token = auditor.signer.token("GET", "http://testserver/v1/audit/entries?limit=1")
    tampered = api.client.get("/v1/audit/entries?limit=100", headers={"Authorization": f"Bearer {token}"})
    assert tampered.status_code == 401 and audit_entries(api.audit)[-1]["reasons"] == ["url_mismatch"]
    # the router's own errors keep our format
    missing = api.signed_get(auditor, "/v1/audit/entries/999999")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "message", "request_id"}
    invalid = api.signed_get(auditor, "/v1/audit/entries?limit=0")
    assert invalid.status_code == 400 and invalid.json()["error"] == "invalid_request"
    head = api.signed_get(auditor, "/v1/audit/tree-head")
    assert head.status_code == 200 and head.json()["tree_size"] >= 1
    public = api.signed_get(auditor, "/v1/audit/public-key").json()
    assert base64.b64decode(public["public_key"]) and "PRIVATE" not in public["pem"]


def test_health_readiness_metrics_and_docs(api: ApiHarness) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "policy": "ok", "policy_revision": "rev-standin"}

    energy = api.register("energy")
    api.signed_post(energy, query())
    api.client.post(QUERY_PATH, content=query())
    metrics = api.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'citygov_http_requests_total{method="POST",route="/v1/data/query",status="200"} 1' in text
    assert 'citygov_http_requests_total{method="POST",route="/v1/data/query",status="401"} 1' in text
    assert 'citygov_api_auth_failures_total{reason="header_missing"} 1' in text
    assert 'citygov_api_records_released_total 10' in text
    assert re.search(r'citygov_http_request_duration_seconds_bucket\{route="/v1/data/query",le="\+Inf"\} 2', text)
    assert "# TYPE citygov_http_request_duration_seconds histogram" in text

    schema = api.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/data/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/StandInQuery"}
    assert "fields" in schema["components"]["schemas"]["StandInQuery"]["properties"]
    assert "/v1/audit/entries" in schema["paths"]
    assert api.client.get("/docs").status_code == 200


def test_readiness_fails_when_the_policy_engine_is_not_loaded(api: ApiHarness) -> None:
    from dataclasses import replace

    state = api.client.app.state.api  # type: ignore[attr-defined]
    state.backend = replace(state.backend, policy_revision=lambda: None)
    response = api.client.get("/readyz")
    assert response.status_code == 503 and response.json()["policy"] == "not loaded"


def test_unknown_routes_and_methods_use_our_error_format(api: ApiHarness) -> None:
    response = api.client.get(QUERY_PATH)
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    response = api.client.get("/v1/nothing-here")
    assert response.status_code == 404 and set(response.json()) == {"error", "message", "request_id"}


def test_a_failing_audit_log_releases_nothing(api: ApiHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    energy = api.register("energy")

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(api.audit, "append", broken)
    response = api.signed_post(energy, query())
    assert response.status_code == 503
    assert "SL-" not in response.text and "disk" not in response.text
    assert response.json()["error"] == "audit_unavailable"


def test_an_unexpected_query_layer_error_is_a_generic_500(api: ApiHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    energy = api.register("energy")

    def explode(*_args: object) -> None:
        raise KeyError("secret-internal-detail")

    monkeypatch.setattr(api.service, "run", explode)
    response = api.signed_post(energy, query())
    assert response.status_code == 500 and "secret-internal-detail" not in response.text
    last = audit_entries(api.audit)[-1]
    assert last["decision"] == "error" and last["reasons"] == ["internal_error"]


def test_the_consent_router_needs_a_signed_privacy_officer(api: ApiHarness) -> None:
    officer = api.register("dpo-office", roles=("privacy-officer",))
    energy = api.register("energy")
    grant = orjson.dumps({
        "subject_id": "urn:ngsi-ld:Person:R-55812", "controller": "social-care", "purposes": ["care.monitoring"],
        "legal_basis": "explicit-consent", "special_categories": ["health"], "collection_method": "paper form",
    })
    created = api.signed_post(officer, grant, url=f"{QUERY_URL.removesuffix(QUERY_PATH)}/v1/consents")
    assert created.status_code == 201, created.text
    consent = created.json()["consent"]
    assert consent["subject"].startswith("psn:v1:") and "R-55812" not in created.text
    shown = api.signed_get(officer, f"/v1/consents/{consent['consent_id']}")
    assert shown.status_code == 200 and shown.json()["consent_id"] == consent["consent_id"]
    entries = audit_entries(api.audit)
    assert any(e["action"] == Action.CONSENT_CHANGE for e in entries)  # the grant itself, audited

    denied = api.signed_get(energy, f"/v1/consents/{consent['consent_id']}")
    assert denied.status_code == 403 and denied.json()["reasons"] == ["privacy_officer_role_required"]
    assert audit_entries(api.audit)[-1]["decision"] == "deny"
    assert api.client.get(f"/v1/consents/{consent['consent_id']}").status_code == 401
