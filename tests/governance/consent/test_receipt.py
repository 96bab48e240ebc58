"""Signed consent receipts: Kantara fields, EdDSA only, and every way of forging one refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from governance.consent.errors import InvalidReceiptError
from governance.consent.receipt import KANTARA_VERSION, RECEIPT_TYPE, load_public_key, verify_receipt
from governance.consent.registry import ConsentRegistry
from governance.protect.keyring import public_pem
from tests.conftest import FIXED_NOW
from tests.governance.protect.support import KEY_OTHER, KEY_V1, KEY_V2, keyring

RESIDENT = "urn:ngsi-ld:Person:R-55812"


@pytest.fixture
def registry(sqlite_engine: Engine) -> ConsentRegistry:
    return ConsentRegistry(sqlite_engine, keyring(sqlite_engine), clock=lambda: FIXED_NOW)


@pytest.fixture
def receipt(registry: ConsentRegistry) -> str:
    return registry.grant(
        {"subject_id": RESIDENT, "controller": "City Social Care", "purposes": ["care.alerting", "care.wellbeing"],
         "recipients": ["dept:emergency"], "legal_basis": "explicit-consent", "collection_method": "paper form",
         "special_categories": ["health"], "policy_url": "https://city.example/privacy/care",
         "valid_until": FIXED_NOW + timedelta(days=365), "on_behalf": True},
        actor="agency:home-care",
    ).receipt


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    head, body, signature = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return (json.loads(base64.urlsafe_b64decode(pad(head))), json.loads(base64.urlsafe_b64decode(pad(body))),
            signature)


def _encode(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")


def test_a_receipt_carries_the_kantara_fields_and_only_the_pseudonym(registry: ConsentRegistry, receipt: str) -> None:
    header, claims, _ = _parts(receipt)
    assert header == {"alg": "EdDSA", "typ": RECEIPT_TYPE, "kid": registry.keyring.receipt_key().kid}
    for field in ("version", "jurisdiction", "consentTimestamp", "collectionMethod", "consentReceiptID",
                  "language", "piiPrincipalId", "piiControllers", "policyUrl", "services", "sensitive", "spiCat"):
        assert field in claims, field
    assert claims["version"] == KANTARA_VERSION
    assert claims["piiPrincipalId"] == claims["sub"] == registry.pseudonyms.of(RESIDENT)
    assert claims["consentTimestamp"] == int(FIXED_NOW.timestamp())
    assert claims["piiControllers"] == [{"piiController": "City Social Care", "onBehalf": True}]
    purposes = claims["services"][0]["purposes"]
    assert [p["purpose"] for p in purposes] == ["care.alerting", "care.wellbeing"]
    assert purposes[0]["thirdPartyDisclosure"] is True and purposes[0]["thirdPartyName"] == "dept:emergency"
    assert claims["sensitive"] is True and claims["spiCat"] == ["health"]
    assert claims["citygov"]["event"] == "grant" and claims["citygov"]["legalBasis"] == "explicit-consent"
    assert "R-55812" not in json.dumps(claims)
    assert registry.verify_receipt(receipt)["jti"] == claims["jti"]


def test_a_receipt_verifies_offline_with_the_published_public_key(registry: ConsentRegistry, receipt: str) -> None:
    [pem] = [public_pem(k) for k in registry.receipt_public_keys().values()]
    assert verify_receipt(receipt, load_public_key(pem))["sub"] == registry.pseudonyms.of(RESIDENT)


def test_an_altered_receipt_is_refused(registry: ConsentRegistry, receipt: str) -> None:
    header, claims, signature = _parts(receipt)
    claims["services"][0]["purposes"].append({"purpose": "research"})
    forged = f"{_encode(header)}.{_encode(claims)}.{signature}"
    with pytest.raises(InvalidReceiptError, match="signature"):
        registry.verify_receipt(forged)
    with pytest.raises(InvalidReceiptError):
        registry.verify_receipt(receipt[:-4] + ("AAAA" if not receipt.endswith("AAAA") else "BBBB"))
    with pytest.raises(InvalidReceiptError):
        registry.verify_receipt("not a token")


def test_algorithm_tricks_are_refused(registry: ConsentRegistry, receipt: str) -> None:
    header, claims, _ = _parts(receipt)
    unsigned = f"{_encode({**header, 'alg': 'none'})}.{_encode(claims)}."
    with pytest.raises(InvalidReceiptError, match="algorithm"):
        registry.verify_receipt(unsigned)
    # the classic confusion: HMAC "signed" with the public key, which a naive verifier would use as the secret
    pem = public_pem(registry.keyring.receipt_key().public_key).encode()
    signing_input = f"{_encode({**header, 'alg': 'HS256'})}.{_encode(claims)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    hmac_forgery = f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    with pytest.raises(InvalidReceiptError, match="algorithm"):
        registry.verify_receipt(hmac_forgery)
    api_token = jwt.encode(claims, registry.keyring.receipt_key().private_key, algorithm="EdDSA",
                           headers={"kid": header["kid"]})
    with pytest.raises(InvalidReceiptError, match="typ"):
        registry.verify_receipt(api_token)  # same key, but not typed as a receipt


def test_receipts_signed_by_another_key_are_refused(registry: ConsentRegistry, receipt: str) -> None:
    header, claims, _ = _parts(receipt)
    stranger = Ed25519PrivateKey.generate()
    same_kid = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": header["kid"], "typ": RECEIPT_TYPE})
    with pytest.raises(InvalidReceiptError, match="signature"):
        registry.verify_receipt(same_kid)
    own_kid = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "attacker", "typ": RECEIPT_TYPE})
    with pytest.raises(InvalidReceiptError, match="unknown key"):
        registry.verify_receipt(own_kid)
    with pytest.raises(InvalidReceiptError):
        verify_receipt(receipt, stranger.public_key())


def test_content_that_is_not_a_citygov_receipt_is_refused(registry: ConsentRegistry, receipt: str) -> None:
    header, claims, _ = _parts(receipt)
    key = registry.keyring.receipt_key().private_key
    for broken in ({**claims, "version": "KI-CR-v1.0.0"}, {**claims, "piiPrincipalId": "someone else"},
                   {k: v for k, v in claims.items() if k != "citygov"},
                   {k: v for k, v in claims.items() if k != "jti"}):
        token = jwt.encode(broken, key, algorithm="EdDSA", headers={"kid": header["kid"], "typ": RECEIPT_TYPE})
        with pytest.raises(InvalidReceiptError):
            registry.verify_receipt(token)


def test_receipts_still_verify_after_master_key_rotation(sqlite_engine: Engine, receipt: str) -> None:
    rotated = keyring(sqlite_engine, (1, KEY_V1), (2, KEY_V2))
    rotated.rewrap()
    after = ConsentRegistry(sqlite_engine, keyring(sqlite_engine, (2, KEY_V2)))
    assert after.verify_receipt(receipt)["version"] == KANTARA_VERSION


def test_another_deployment_does_not_accept_our_receipts(receipt: str, tmp_path: Any) -> None:
    from governance.store.db import create_db_engine, init_schema

    engine = create_db_engine(f"sqlite:///{tmp_path / 'other.db'}")
    init_schema(engine)
    try:
        other = ConsentRegistry(engine, keyring(engine, (1, KEY_OTHER)))
        with pytest.raises(InvalidReceiptError):
            other.verify_receipt(receipt)
    finally:
        engine.dispose()
