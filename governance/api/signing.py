"""Signed responses: a detached JWS (RFC 7515 Appendix F) over the exact response body bytes.

The signature travels in the ``X-Citygov-Signature`` header as ``<protected>..<signature>`` — compact
serialization with the payload part left empty. To verify, put ``base64url(body)`` back between the
dots and check the EdDSA signature with the key named by ``kid`` in the service's JWKS
(``/.well-known/jwks.json``). The protected header is::

    {"alg": "EdDSA", "kid": …, "typ": "citygov-response+jws", "iat": <Unix seconds>,
     "sha256": base64url(SHA-256(body)), "request_id": …,
     "request_jti": <the request's jti>, "decision_id": …, "policy_revision": …}

the last three only when known (a request that failed authentication has no trusted ``jti``).
``request_jti`` binds the response to the request that asked for it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from governance.api.jose import PublicJwk, b64url, b64url_decode, from_key, parse_jwk, sha256_b64url
from governance.errors import InvalidRequestError, VerificationError

SIGNATURE_HEADER = "X-Citygov-Signature"
RESPONSE_TYPE = "citygov-response+jws"
_MAX_SIGNATURE = 4096


class ResponseSigner:
    """Signs response bodies with the service's Ed25519 key; publishes the public half as a JWKS."""

    __slots__ = ("_key", "kid", "public")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public: PublicJwk = from_key(private_key.public_key())
        self.kid = self.public.kid

    def __repr__(self) -> str:
        return f"ResponseSigner(kid={self.kid!r})"

    def __reduce__(self) -> Any:
        raise TypeError("key objects cannot be pickled")

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public.published()]}

    def sign(self, body: bytes, *, iat: int, **claims: str | None) -> str:
        """The detached JWS of ``body``; ``claims`` (request_id, request_jti, decision_id, policy_revision)
        go into the protected header when not None."""
        header: dict[str, Any] = {"alg": "EdDSA", "kid": self.kid, "typ": RESPONSE_TYPE, "iat": iat,
                                  "sha256": sha256_b64url(body)}
        header.update({name: value for name, value in claims.items() if value is not None})
        protected = b64url(orjson.dumps(header))
        signature = self._key.sign(f"{protected}.{b64url(body)}".encode("ascii"))
        return f"{protected}..{b64url(signature)}"


def jwks_keys(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The EdDSA keys of a JWKS by ``kid`` (other entries are ignored: responses are only EdDSA)."""
    keys = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(keys, list):
        raise VerificationError("not a JWK set (no 'keys' list)")
    found: dict[str, Ed25519PublicKey] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or not isinstance(entry.get("kid"), str):
            continue
        try:
            parsed = parse_jwk(entry)
        except InvalidRequestError:
            continue
        if isinstance(parsed.key, Ed25519PublicKey):
            found[entry["kid"]] = parsed.key
    if not found:
        raise VerificationError("the JWK set holds no Ed25519 key")
    return found


def verify_response(signature: str, body: bytes, keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Check a response's detached JWS against ``body``; returns the protected header, else VerificationError."""
    if not isinstance(signature, str) or len(signature) > _MAX_SIGNATURE:
        raise VerificationError("no usable response signature")
    parts = signature.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        raise VerificationError("the response signature is not a detached compact JWS (<header>..<signature>)")
    try:
        header = orjson.loads(b64url_decode(parts[0]))
        raw_signature = b64url_decode(parts[2])
    except (ValueError, orjson.JSONDecodeError):
        raise VerificationError("the response signature is not valid base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA" or header.get("typ") != RESPONSE_TYPE:
        raise VerificationError("the response signature is not an EdDSA citygov response signature")
    if "crit" in header or "b64" in header:
        raise VerificationError("the response signature uses header parameters this verifier does not support")
    key = keys.get(str(header.get("kid")))
    if key is None:
        raise VerificationError("the response was signed by a key that is not in the JWK set")
    try:
        key.verify(raw_signature, f"{parts[0]}.{b64url(body)}".encode("ascii"))
    except InvalidSignature:
        raise VerificationError("the response signature does not match the body: altered, or not from citygov") \
            from None
    digest = header.get("sha256")
    if digest is not None and not (isinstance(digest, str) and hmac.compare_digest(digest, sha256_b64url(body))):
        raise VerificationError("the signed sha256 does not match the body")
    return header
