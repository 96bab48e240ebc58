"""Attacks on the signed API: each is refused with the generic answer, audited with its precise reason,
and leaks nothing — no data, no reason, no token in the body or in the logs — on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any, cast

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from governance.api.jose import b64url
from governance.api.signing import SIGNATURE_HEADER, jwks_keys, verify_response
from governance.audit.entries import Action
from tests.governance.api.support import BASE, QUERY_PATH, QUERY_URL, ApiHarness, Party, audit_entries

GOOD = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id", "powerState"],
                     "page_size": 5})
GENERIC_401 = {"error": "unauthenticated", "message": "the request could not be authenticated"}


@pytest.fixture
def energy(api: ApiHarness) -> Party:
    return api.register("energy", purposes=("energy",))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def post_raw(api: ApiHarness, token: str | None, body: bytes = GOOD, path: str = QUERY_PATH) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return api.client.post(path, content=body, headers=headers)


def manual_token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes] | None) -> str:
    head = b64url(orjson.dumps(header))
    payload = b64url(orjson.dumps(claims))
    signature = b64url(sign(f"{head}.{payload}".encode())) if sign else ""
    return f"{head}.{payload}.{signature}"


def good_claims(api: ApiHarness, party: Party, body: bytes = GOOD, **changes: Any) -> dict[str, Any]:
    now = int(api.clock().timestamp())
    claims = {"iss": party.name, "aud": "citygov", "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex,
              "htm": "POST", "htu": QUERY_URL, "bsh": b64url(hashlib.sha256(body).digest())}
    claims.update(changes)
    return claims


def assert_refused(api: ApiHarness, response: Any, reason: str, logs: pytest.LogCaptureFixture,
                   secret: str | None = None) -> dict[str, Any]:
    """401 with exactly the generic body, a valid response signature, one auth.failed entry with ``reason``,
    the query layer never called, and neither the token nor the reason in the body."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert {k: v for k, v in body.items() if k != "request_id"} == GENERIC_401
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert reason not in response.text
    keys = jwks_keys(api.client.get("/.well-known/jwks.json").json())
    verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
    last = audit_entries(api.audit)[-1]
    assert last["action"] == Action.AUTH_FAILED and last["actor"] == "anonymous"
    assert last["reasons"] == [reason], last
    assert last["refs"]["request_id"] == body["request_id"] and last["refs"]["status"] == 401
    assert last["refs"]["response_sha256"] == hashlib.sha256(response.content).hexdigest()
    assert api.service.calls == []
    if secret is not None:
        assert secret not in logs.text and secret not in orjson.dumps(last).decode()
    return last


def test_alg_none_is_refused(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    token = manual_token({"alg": "none", "kid": energy.kid}, good_claims(api, energy), None)
    assert_refused(api, post_raw(api, token), "alg_not_allowed", logs, secret=token)
    token = manual_token({"alg": "none", "kid": energy.kid}, good_claims(api, energy), lambda _: b"x")
    assert_refused(api, post_raw(api, token), "alg_not_allowed", logs, secret=token)


def test_hs256_with_the_public_key_as_secret_is_refused(api: ApiHarness, energy: Party,
                                                        logs: pytest.LogCaptureFixture) -> None:
    public_pem = energy.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (public_pem, base64.urlsafe_b64decode(energy.signer.kid + "=")):
        def with_hmac(data: bytes, key: bytes = secret) -> bytes:
            return hmac.new(key, data, hashlib.sha256).digest()

        token = manual_token({"alg": "HS256", "kid": energy.kid, "typ": "JWT"}, good_claims(api, energy), with_hmac)
        assert_refused(api, post_raw(api, token), "alg_not_allowed", logs, secret=token)


def test_unknown_kid_and_missing_kid_are_refused(api: ApiHarness, energy: Party,
                                                 logs: pytest.LogCaptureFixture) -> None:
    claims = good_claims(api, energy)
    token = jwt.encode(claims, energy.key, algorithm="EdDSA", headers={"kid": "A" * 43})
    entry = assert_refused(api, post_raw(api, token), "kid_unknown", logs, secret=token)
    assert entry["refs"]["kid"] == "A" * 43 and "key_owner" not in entry["refs"]
    token = jwt.encode(good_claims(api, energy), energy.key, algorithm="EdDSA")
    assert_refused(api, post_raw(api, token), "kid_missing", logs, secret=token)
    token = jwt.encode(good_claims(api, energy), energy.key, algorithm="EdDSA", headers={"kid": "../etc/passwd"})
    entry = assert_refused(api, post_raw(api, token), "kid_unknown", logs)
    assert "kid" not in entry["refs"]  # a kid that is not a thumbprint is not copied anywhere


def test_revoked_key_is_refused_at_once(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    assert api.signed_post(energy, GOOD).status_code == 200
    api.service.calls.clear()
    api.registry.revoke_key("energy", energy.kid, actor="test:officer")
    entry = assert_refused(api, api.signed_post(energy, GOOD), "key_revoked", logs)
    assert entry["refs"]["key_owner"] == "energy"


def test_a_signature_by_another_key_is_refused(api: ApiHarness, energy: Party,
                                               logs: pytest.LogCaptureFixture) -> None:
    other = api.register("transport")
    token = jwt.encode(good_claims(api, energy), other.key, algorithm="EdDSA", headers={"kid": energy.kid})
    assert_refused(api, post_raw(api, token), "signature_invalid", logs, secret=token)
    # transport's own valid key, claiming to be energy
    token = jwt.encode(good_claims(api, energy), other.key, algorithm="EdDSA", headers={"kid": other.kid})
    assert_refused(api, post_raw(api, token), "issuer_mismatch", logs, secret=token)


def test_the_algorithm_comes_from_the_registered_key(api: ApiHarness, logs: pytest.LogCaptureFixture) -> None:
    es = api.register("energy", alg="ES256", purposes=("energy",))
    assert api.signed_post(es, GOOD).status_code == 200
    api.service.calls.clear()
    # an EdDSA header on an ES256 key: refused before any verification is tried
    token = manual_token({"alg": "EdDSA", "kid": es.kid}, good_claims(api, es), lambda _: b"\0" * 64)
    assert_refused(api, post_raw(api, token), "alg_mismatch", logs)


TIME_CASES = [  # (iat, exp, nbf) relative to now, and the reason
    (-91, -31, None, "expired"),
    (120, 180, None, "issued_in_future"),
    (0, 60, 120, "not_yet_valid"),
    (0, 86_400, None, "lifetime_too_long"),
    (0, 301, None, "lifetime_too_long"),
    (10, 10, None, "lifetime_invalid"),
]


def test_times_outside_the_window_are_refused(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    now = int(api.clock().timestamp())
    for iat, exp, nbf, reason in TIME_CASES:
        claims = good_claims(api, energy, iat=now + iat, exp=now + exp)
        if nbf is not None:
            claims["nbf"] = now + nbf
        token = jwt.encode(claims, energy.key, algorithm="EdDSA", headers={"kid": energy.kid})
        assert_refused(api, post_raw(api, token), reason, logs, secret=token)


def test_clock_skew_of_30_seconds_is_tolerated(api: ApiHarness, energy: Party) -> None:
    now = int(api.clock().timestamp())
    late = good_claims(api, energy, iat=now - 89, exp=now - 29)  # expired 29 s ago: within the skew
    early = good_claims(api, energy, iat=now + 29, exp=now + 89, nbf=now + 29)  # a fast clock
    for claims in (late, early):
        token = jwt.encode(claims, energy.key, algorithm="EdDSA", headers={"kid": energy.kid})
        assert post_raw(api, token).status_code == 200


def test_a_replayed_jti_is_refused(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    token = energy.signer.token("POST", QUERY_URL, GOOD)
    first = post_raw(api, token)
    assert first.status_code == 200 and len(first.json()["data"]) == 5
    api.service.calls.clear()
    assert_refused(api, post_raw(api, token), "jti_replayed", logs, secret=token)
    # the same jti in a fresh, otherwise valid token is a replay too
    again = energy.signer.token("POST", QUERY_URL, GOOD, jti=orjson.loads(
        base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"])
    assert_refused(api, post_raw(api, again), "jti_replayed", logs)


def test_bad_jti_values_are_refused(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    for jti in ("x" * 129, "has space", "ünï"):
        token = energy.signer.token("POST", QUERY_URL, GOOD, jti=jti)
        assert_refused(api, post_raw(api, token), "jti_invalid", logs)
    token = energy.signer.token("POST", QUERY_URL, GOOD, jti=12345)  # type: ignore[arg-type]
    assert_refused(api, post_raw(api, token), "claims_malformed", logs)


def test_a_body_changed_after_signing_is_refused(api: ApiHarness, energy: Party,
                                                 logs: pytest.LogCaptureFixture) -> None:
    token = energy.signer.token("POST", QUERY_URL, GOOD)
    tampered = GOOD.replace(b'"page_size":5', b'"page_size":6')
    assert tampered != GOOD
    assert_refused(api, post_raw(api, token, tampered), "body_hash_mismatch", logs)
    token = energy.signer.token("POST", QUERY_URL, GOOD)
    assert_refused(api, post_raw(api, token, GOOD + b" "), "body_hash_mismatch", logs)  # one byte more


def test_url_and_method_changed_after_signing_are_refused(api: ApiHarness, energy: Party,
                                                          logs: pytest.LogCaptureFixture) -> None:
    cases = [
        (energy.signer.token("GET", QUERY_URL, GOOD), "method_mismatch"),
        (energy.signer.token("POST", QUERY_URL + "?page=2", GOOD), "url_mismatch"),
        (energy.signer.token("POST", "http://elsewhere" + QUERY_PATH, GOOD), "url_mismatch"),
        (energy.signer.token("POST", "https://testserver" + QUERY_PATH, GOOD), "url_mismatch"),
        (energy.signer.token("POST", BASE + "/v1/data/query/", GOOD), "url_mismatch"),
        (energy.signer.token("POST", BASE + "/v1/audit/entries", GOOD), "url_mismatch"),
    ]
    for token, reason in cases:
        assert_refused(api, post_raw(api, token), reason, logs, secret=token)
    token = energy.signer.token("POST", QUERY_URL, GOOD, htu="not a url")
    assert_refused(api, post_raw(api, token), "url_invalid", logs)


def test_the_query_string_is_covered(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    url = QUERY_URL + "?trace=a&b=2"
    token = energy.signer.token("POST", url, GOOD)
    assert post_raw(api, token, path=QUERY_PATH + "?trace=a&b=2").status_code == 200
    api.service.calls.clear()
    token = energy.signer.token("POST", url, GOOD)
    assert_refused(api, post_raw(api, token, path=QUERY_PATH + "?b=2&trace=a"), "url_mismatch", logs)


def test_wrong_audience_is_refused(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    for audience in ("citygov-staging", ["other", "another"], ""):
        token = energy.signer.token("POST", QUERY_URL, GOOD, aud=audience)
        assert_refused(api, post_raw(api, token), "audience_mismatch", logs)
    token = energy.signer.token("POST", QUERY_URL, GOOD, aud=["other", "citygov"])
    assert post_raw(api, token).status_code == 200


def test_every_required_claim_is_required(api: ApiHarness, energy: Party, logs: pytest.LogCaptureFixture) -> None:
    for missing in ("iss", "aud", "iat", "exp", "jti", "htm", "htu", "bsh"):
        claims = good_claims(api, energy)
        del claims[missing]
        token = jwt.encode(claims, energy.key, algorithm="EdDSA", headers={"kid": energy.kid})
        entry = assert_refused(api, post_raw(api, token), "claim_missing", logs)
        assert missing in entry["refs"]["detail"]


def test_missing_header_and_garbage_tokens_are_refused(api: ApiHarness, energy: Party,
                                                       logs: pytest.LogCaptureFixture) -> None:
    assert_refused(api, post_raw(api, None), "header_missing", logs)
    response = api.client.post(QUERY_PATH, content=GOOD, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert_refused(api, response, "header_malformed", logs)
    for garbage in ("garbage", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9", "%%%.%%%.%%%"):
        assert_refused(api, post_raw(api, garbage), "token_malformed", logs, secret=garbage if len(garbage) > 5
                       else None)
    assert_refused(api, post_raw(api, "x" * 9000), "token_too_large", logs)
    token = manual_token({"alg": "EdDSA", "kid": energy.kid}, {"iss": "energy"}, None)
    assert_refused(api, post_raw(api, token), "token_malformed", logs)
    token = manual_token({"alg": "EdDSA", "kid": energy.kid, "crit": ["exp"]}, good_claims(api, energy),
                         cast("Callable[[bytes], bytes]", energy.key.sign))
    assert_refused(api, post_raw(api, token), "header_unsupported", logs)
    token = jwt.encode({"not": "claims"}, energy.key, algorithm="EdDSA", headers={"kid": energy.kid})
    assert_refused(api, post_raw(api, token), "claim_missing", logs)
    head = b64url(orjson.dumps({"alg": "EdDSA", "kid": energy.kid}))
    payload = b64url(b"[1, 2]")
    token = f"{head}.{payload}.{b64url(energy.key.sign(f'{head}.{payload}'.encode()))}"  # type: ignore[call-arg]
    assert_refused(api, post_raw(api, token), "claims_malformed", logs)


def test_an_oversized_body_is_refused_before_parsing(api: ApiHarness, energy: Party) -> None:
    big = b'{"dataset": "' + b"x" * (api.settings.api_max_body_bytes + 1) + b'"}'
    response = api.signed_post(energy, big)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large" and "x" * 20 not in response.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for _ in range(20):
            yield b"y" * 4096

    streamed = api.client.post(QUERY_PATH, content=chunks(), headers=energy.signer.headers("POST", QUERY_URL, b""))
    assert streamed.status_code == 413
    entries = [e for e in audit_entries(api.audit) if e["action"] == Action.DATA_REQUEST]
    assert [e["reasons"] for e in entries] == [["payload_too_large"], ["payload_too_large"]]
    assert {e["actor"] for e in entries} == {"anonymous"} and {e["refs"]["status"] for e in entries} == {413}
    assert api.service.calls == []
    keys = jwks_keys(api.client.get("/.well-known/jwks.json").json())
    verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)


MALFORMED = [  # (body, what the message must name)
    (b"{not json", None),
    (b"", None),
    (b"[]", None),
    (orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": "id"}), "fields"),
    (orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": []}), "fields"),
    (orjson.dumps({"dataset": 7, "purpose": "energy", "fields": ["id"]}), "dataset"),
    (orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "page_size": [9]}),
     "page_size"),
    (orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"], "sql": "1; DROP"}),
     "sql"),
]


def test_malformed_bodies_are_our_400_after_authentication(api: ApiHarness, energy: Party) -> None:
    for body, where in MALFORMED:
        response = api.signed_post(energy, body)
        assert response.status_code == 400, response.text
        error = response.json()
        assert set(error) == {"error", "message", "request_id"} and error["error"] == "invalid_request"
        if where is not None:
            assert where in error["message"]
        assert "DROP" not in response.text
        last = audit_entries(api.audit)[-1]
        assert last["action"] == Action.DATA_REQUEST and last["actor"] == "department:energy"
        assert last["decision"] == "invalid" and last["refs"]["records"] == 0
    assert api.service.calls == []


def test_policy_denials_name_reasons_but_never_data(api: ApiHarness) -> None:
    transport = api.register("transport")
    response = api.signed_post(transport, GOOD)
    assert response.status_code == 403
    assert response.json() == {"error": "access_denied", "message": "the request is not allowed",
                               "request_id": response.headers["X-Request-ID"], "reasons": ["no_entitlement"],
                               "decision_id": "dec-deny"}
    last = audit_entries(api.audit)[-1]
    assert (last["decision"], last["reasons"], last["refs"]["decision_id"]) == ("deny", ["no_entitlement"], "dec-deny")
    assert last["dataset"] == "lighting.streetlight" and last["stage"] == "use"
    keys = jwks_keys(api.client.get("/.well-known/jwks.json").json())
    header = verify_response(response.headers[SIGNATURE_HEADER], response.content, keys)
    assert header["decision_id"] == "dec-deny"


def test_a_purpose_outside_the_registration_is_denied(api: ApiHarness, energy: Party) -> None:
    body = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "marketing", "fields": ["id"]})
    response = api.signed_post(energy, body)
    assert response.status_code == 403 and response.json()["reasons"] == ["purpose_not_registered"]
    assert api.service.calls == []


def test_quota_is_429_and_errors_of_the_query_layer_map_to_400_413(api: ApiHarness) -> None:
    anyone = api.register("energy")
    quota = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "quota", "fields": ["id"]})
    assert api.signed_post(anyone, quota).status_code == 429
    unknown = orjson.dumps({"dataset": "nope", "purpose": "energy", "fields": ["id"]})
    response = api.signed_post(anyone, unknown)
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    huge = orjson.dumps({"dataset": "lighting.streetlight", "purpose": "energy", "fields": ["id"],
                         "page_size": 6000})
    assert api.signed_post(anyone, huge).status_code == 413


def _padded(part: str) -> str:
    return part + "=" * (-len(part) % 4)


def test_token_parts_are_read_as_strictly_as_pyjwt_read_them(api: ApiHarness, energy: Party,
                                                             logs: pytest.LogCaptureFixture) -> None:
    """The server verifies tokens itself (no PyJWT on the request path): padded payload and signature parts are
    accepted as PyJWT accepted them; a non-canonical or non-base64url part is malformed; an ES256 signature that
    is not the raw 64-byte r || s (a DER one) does not verify."""
    head = b64url(orjson.dumps({"alg": "EdDSA", "kid": energy.kid}))
    claims = good_claims(api, energy, pad="")
    while len(orjson.dumps(claims)) % 3 == 0:  # a length whose base64url needs padding
        claims["pad"] += "x"
    signing_input = f"{head}.{_padded(b64url(orjson.dumps(claims)))}"  # a signer that pads
    assert signing_input.endswith("=")
    padded = f"{signing_input}.{_padded(b64url(energy.key.sign(signing_input.encode())))}"  # type: ignore[call-arg]
    assert post_raw(api, padded).status_code == 200
    api.service.calls.clear()
    # the last character of a 64-byte signature carries 4 unused bits: setting one is another, non-canonical text
    fresh_head, fresh_payload, fresh_signature = energy.signer.token("POST", QUERY_URL, GOOD).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(fresh_signature[-1]) | 1]
    assert last != fresh_signature[-1]
    assert_refused(api, post_raw(api, f"{fresh_head}.{fresh_payload}.{fresh_signature[:-1]}{last}"),
                   "token_malformed", logs)
    assert_refused(api, post_raw(api, f"{fresh_head}.{fresh_payload}.{fresh_signature[:-1]}+"), "token_malformed",
                   logs)
    es = api.register("es-caller", alg="ES256", purposes=("energy",))
    token = es.signer.token("POST", QUERY_URL, GOOD)
    es_head, es_payload, _ = token.split(".")
    assert isinstance(es.key, ec.EllipticCurvePrivateKey)
    der = es.key.sign(f"{es_head}.{es_payload}".encode(), ec.ECDSA(hashes.SHA256()))
    assert_refused(api, post_raw(api, f"{es_head}.{es_payload}.{b64url(der)}"), "signature_invalid", logs)
