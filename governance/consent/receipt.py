"""Signed consent receipts: a Kantara Consent Receipt (v1.1 fields) as the claims of a JWS, EdDSA (Ed25519).

Every event of a consent — grant, renewal, withdrawal — issues one receipt that the resident or their
care agency keeps. The header names the key (``kid``) and the type (``typ``), so a receipt can never be
taken for an API token or the other way round. Verification accepts exactly one algorithm, EdDSA, and
only keys it was given: never a key named or embedded in the token itself.

The subject appears only as its pseudonym (``sub`` = ``piiPrincipalId``): a receipt that leaks does not
name the resident, and the city can still match it to them by pseudonymizing their id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.consent.errors import InvalidReceiptError
from governance.consent.models import ConsentView
from governance.protect.keyring import ReceiptKey

KANTARA_VERSION = "KI-CR-v1.1.0"
RECEIPT_TYPE = "citygov-consent-receipt+jwt"
ALGORITHMS = ["EdDSA"]
"""The allow-list handed to PyJWT: nothing else is ever accepted."""
_REQUIRED = ["iss", "sub", "iat", "jti"]


def receipt_claims(
    consent: ConsentView, *, event: str, seq: int, at: datetime, receipt_id: str, issuer: str
) -> dict[str, Any]:
    """The receipt of one consent event: Kantara fields plus a ``citygov`` block with the record's state."""
    timestamp = int(at.timestamp())
    termination = (
        f"valid until {consent.valid_until.isoformat()} or withdrawal" if consent.valid_until else "on withdrawal"
    )
    purposes = [
        {
            "purpose": purpose,
            "purposeCategory": [purpose],
            "consentType": "EXPLICIT",
            "piiCategory": consent.special_categories or ["personal"],
            "primaryPurpose": index == 0,
            "termination": termination,
            "thirdPartyDisclosure": bool(consent.recipients),
            "thirdPartyName": ", ".join(consent.recipients),
        }
        for index, purpose in enumerate(consent.purposes)
    ]
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": consent.subject,
        "iat": timestamp,
        "jti": receipt_id,
        "version": KANTARA_VERSION,
        "jurisdiction": consent.jurisdiction,
        "consentTimestamp": timestamp,
        "collectionMethod": consent.collection_method,
        "consentReceiptID": receipt_id,
        "language": consent.language,
        "piiPrincipalId": consent.subject,
        "piiControllers": [{"piiController": consent.controller, "onBehalf": consent.on_behalf}],
        "services": [{"service": consent.controller, "purposes": purposes}],
        "sensitive": bool(consent.special_categories),
        "spiCat": consent.special_categories,
        "citygov": {
            "consentId": consent.consent_id,
            "event": event,
            "seq": seq,
            "status": consent.status,
            "legalBasis": consent.legal_basis,
            "recipients": consent.recipients,
            "validFrom": consent.valid_from.isoformat(),
            "validUntil": consent.valid_until.isoformat() if consent.valid_until else None,
        },
    }
    if consent.policy_url:
        claims["policyUrl"] = consent.policy_url
    return claims


def sign_receipt(claims: Mapping[str, Any], key: ReceiptKey) -> str:
    return jwt.encode(dict(claims), key.private_key, algorithm="EdDSA", headers={"kid": key.kid, "typ": RECEIPT_TYPE})


def verify_receipt(token: str, keys: Mapping[str, Ed25519PublicKey] | Ed25519PublicKey) -> dict[str, Any]:
    """The claims of a genuine receipt; ``InvalidReceiptError`` for anything else.

    ``keys`` is the keyring's receipt keys by ``kid``, or one public key given out of band (a PEM the
    resident received); with one key the ``kid`` is not needed to pick it.
    """
    token = token.strip()
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidReceiptError("not a consent receipt (not a compact JWS)") from None
    if header.get("typ") != RECEIPT_TYPE:
        raise InvalidReceiptError("not a consent receipt (wrong 'typ')")
    if header.get("alg") not in ALGORITHMS:
        raise InvalidReceiptError("receipt algorithm not allowed (only EdDSA)")
    if isinstance(keys, Ed25519PublicKey):
        key = keys
    else:
        found = keys.get(str(header.get("kid")))
        if found is None:
            raise InvalidReceiptError("receipt signed by an unknown key")
        key = found
    try:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=ALGORITHMS,
            options={"require": _REQUIRED, "verify_iat": False, "verify_aud": False},
        )
    except jwt.InvalidSignatureError:
        raise InvalidReceiptError("receipt signature does not verify: altered, or signed by another key") from None
    except jwt.PyJWTError as exc:
        raise InvalidReceiptError(f"receipt rejected: {type(exc).__name__}") from None
    if (
        claims.get("version") != KANTARA_VERSION
        or claims.get("consentReceiptID") != claims["jti"]
        or claims.get("piiPrincipalId") != claims["sub"]
        or not isinstance(claims.get("citygov"), dict)
    ):
        raise InvalidReceiptError("receipt content is not a citygov consent receipt")
    return claims


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (what ``citygov consent public-key`` prints)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise InvalidReceiptError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidReceiptError("the public key is not an Ed25519 key")
    return key
