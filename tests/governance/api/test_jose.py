"""Public keys as PEM or JWK: Ed25519 and P-256 only, RFC 7638 thumbprints, private keys refused; the
response signature format, and the canonical URL rule of ``htu``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.api.auth import canonical_url
from governance.api.jose import b64url, b64url_decode, parse_public_key, thumbprint
from governance.api.signing import ResponseSigner, jwks_keys, verify_response
from governance.errors import InvalidRequestError, VerificationError

# RFC 8037 Appendix A.2 / A.3: an Ed25519 public key and its RFC 7638 thumbprint
RFC8037_JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def pem(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def test_the_rfc_8037_thumbprint_vector() -> None:
    assert thumbprint(RFC8037_JWK) == RFC8037_THUMBPRINT
    parsed = parse_public_key(orjson.dumps({**RFC8037_JWK, "kid": "their-own-name", "use": "sig"}))
    assert parsed.kid == RFC8037_THUMBPRINT and parsed.alg == "EdDSA"


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_pem_and_jwk_of_one_key_give_one_kid(alg: str) -> None:
    private = Ed25519PrivateKey.generate() if alg == "EdDSA" else ec.generate_private_key(ec.SECP256R1())
    from_pem = parse_public_key(pem(private.public_key()))
    from_jwk = parse_public_key(orjson.dumps(from_pem.published()))
    assert from_pem.kid == from_jwk.kid and from_pem.alg == from_jwk.alg == alg
    assert from_pem.jwk == from_jwk.jwk and "d" not in from_pem.jwk


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()), "not accepted"),
        (lambda: pem(ec.generate_private_key(ec.SECP384R1()).public_key()), "P-256"),
        (lambda: pem(ed448.Ed448PrivateKey.generate().public_key()), "not accepted"),
        (lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
         "private key"),
        (lambda: orjson.dumps({**RFC8037_JWK, "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}), "secret"),
        (lambda: orjson.dumps({"kty": "oct", "k": "c2VjcmV0"}), "secret"),
        (lambda: orjson.dumps({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}), "invalid"),
        (lambda: orjson.dumps({"kty": "EC", "crv": "P-256", "x": b64url(b"\1" * 32), "y": b64url(b"\2" * 32)}),
         "invalid"),  # not a point on the curve
        (lambda: orjson.dumps({**RFC8037_JWK, "alg": "ES256"}), "alg"),
        (lambda: orjson.dumps({**RFC8037_JWK, "use": "enc"}), "use"),
        (lambda: orjson.dumps({"keys": [RFC8037_JWK]}), "JWK set"),
        (lambda: b"{not json", "not valid JSON"),
        (lambda: b"hello", "not a public key"),
        (lambda: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a valid PEM"),
    ],
)
def test_other_keys_are_refused_with_a_clear_message(make: object, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_public_key(make())  # type: ignore[operator]


def test_base64url_is_strict() -> None:
    assert b64url_decode(b64url(b"\xff\xfe")) == b"\xff\xfe"
    for bad in ("a=", "a+b/", "a b", "a", "é"):
        with pytest.raises(ValueError, match="base64url"):
            b64url_decode(bad)


def test_response_signatures_verify_and_catch_every_change() -> None:
    signer = ResponseSigner(Ed25519PrivateKey.generate())
    keys = jwks_keys(signer.jwks())
    body = b'{"data":[1,2,3]}'
    signature = signer.sign(body, iat=1_790_000_000, decision_id="d-1", request_jti="j", policy_revision=None)
    header = verify_response(signature, body, keys)
    assert header["decision_id"] == "d-1" and "policy_revision" not in header and header["kid"] == signer.kid
    protected, empty, sig = signature.split(".")
    assert empty == ""
    with pytest.raises(VerificationError, match="does not match"):
        verify_response(signature, body + b" ", keys)
    other = ResponseSigner(Ed25519PrivateKey.generate())
    with pytest.raises(VerificationError, match="not in the JWK set"):
        verify_response(other.sign(body, iat=1), body, keys)
    forged_header = b64url(orjson.dumps({**orjson.loads(b64url_decode(protected)), "decision_id": "d-2"}))
    with pytest.raises(VerificationError, match="does not match"):
        verify_response(f"{forged_header}..{sig}", body, keys)
    for broken in ("", "a.b.c", f"{protected}.{b64url(body)}.{sig}", "x" * 5000):
        with pytest.raises(VerificationError):
            verify_response(broken, body, keys)
    with pytest.raises(VerificationError, match="no Ed25519 key"):
        jwks_keys({"keys": [{"kty": "EC", "crv": "P-256"}]})


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("http://testserver/v1/data/query", "http://testserver/v1/data/query"),
        ("HTTPS://Data.City.Example:443/v1/data/query", "https://data.city.example/v1/data/query"),
        ("http://data.city.example:80/v1/x?", "http://data.city.example/v1/x"),
        ("http://127.0.0.1:8000/v1/audit/entries?b=2&a=1", "http://127.0.0.1:8000/v1/audit/entries?b=2&a=1"),
        ("https://h:8443", "https://h:8443/"),
        ("http://[::1]:8000/v1/%7Ex?q=%20", "http://[::1]:8000/v1/%7Ex?q=%20"),
    ],
)
def test_canonical_urls(given: str, canonical: str) -> None:
    assert canonical_url(given) == canonical


@pytest.mark.parametrize("bad", ["ftp://h/x", "/v1/data/query", "http://h/x#frag", "http://u:p@h/x", "http://h/a b",
                                 "http:///x", "http://h/ä"])
def test_what_is_not_a_canonicalizable_url(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        canonical_url(bad)
