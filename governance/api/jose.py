"""JOSE helpers of the data API: public keys as PEM or JWK, RFC 7638 thumbprints, base64url.

Two key types are allowed, each with exactly one algorithm: Ed25519 (``EdDSA``) and P-256 (``ES256``).
Anything else — RSA, other curves, symmetric keys, private keys offered as public ones — is refused
when a key is registered, so the verifier never has to decide what a key may do.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from governance.errors import InvalidRequestError

Algorithm = Literal["EdDSA", "ES256"]
ALGORITHMS: tuple[Algorithm, ...] = ("EdDSA", "ES256")
PublicKeyType = Ed25519PublicKey | ec.EllipticCurvePublicKey
_MAX_KEY_TEXT = 16 * 1024


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: anything else (``=``, ``+``, ``/``, spaces) is a ValueError."""
    if not isinstance(text, str) or "=" in text or not text.isascii():
        raise ValueError("not base64url")
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if not set(text) <= allowed or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sha256_b64url(data: bytes) -> str:
    return b64url(hashlib.sha256(data).digest())


@dataclass(frozen=True)
class PublicJwk:
    """A verified public key: its algorithm, the key object, its JWK (required members) and thumbprint."""

    alg: Algorithm
    key: PublicKeyType
    jwk: dict[str, str]
    kid: str

    def published(self) -> dict[str, str]:
        """The JWK as a JWKS lists it: with ``kid``, ``alg`` and ``use``."""
        return {**self.jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no whitespace; base64url."""
    required = ("crv", "kty", "x") if jwk.get("kty") == "OKP" else ("crv", "kty", "x", "y")
    canonical = orjson.dumps({name: jwk[name] for name in required}, option=orjson.OPT_SORT_KEYS)
    return sha256_b64url(canonical)


def from_key(key: Any) -> PublicJwk:
    """A ``PublicJwk`` from a cryptography public key object; other key types are refused."""
    if isinstance(key, Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        return PublicJwk("EdDSA", key, jwk, thumbprint(jwk))
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise InvalidRequestError(f"EC keys must be on P-256 (ES256), not {key.curve.name}")
        numbers = key.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64url(numbers.x.to_bytes(32, "big")),
               "y": b64url(numbers.y.to_bytes(32, "big"))}
        return PublicJwk("ES256", key, jwk, thumbprint(jwk))
    raise InvalidRequestError(
        f"{type(key).__name__.removeprefix('_')} keys are not accepted: use Ed25519 (EdDSA) or P-256 (ES256)"
    )


def parse_public_key(data: bytes | str) -> PublicJwk:
    """A public key given as PEM (SubjectPublicKeyInfo) or as a JWK (JSON); refuses private keys."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    if len(text) > _MAX_KEY_TEXT:
        raise InvalidRequestError("the key file is too large to be a public key")
    stripped = text.strip()
    if stripped.startswith("{"):
        return parse_jwk(_json_object(stripped))
    if "PRIVATE KEY" in stripped:
        raise InvalidRequestError("this is a private key: give the public key (keep the private key with its owner)")
    if "-----BEGIN" not in stripped:
        raise InvalidRequestError("not a public key: expected PEM (-----BEGIN PUBLIC KEY-----) or a JWK (JSON)")
    try:
        key = serialization.load_pem_public_key(stripped.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise InvalidRequestError("not a valid PEM public key") from None
    return from_key(key)


def parse_jwk(jwk: dict[str, Any]) -> PublicJwk:
    """A public JWK: OKP/Ed25519 or EC/P-256, nothing else; ``alg`` and ``use`` must agree when present."""
    if "d" in jwk or "k" in jwk:
        raise InvalidRequestError("this JWK holds secret key material: give the public key only")
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "OKP" and crv == "Ed25519":
        alg: Algorithm = "EdDSA"
    elif kty == "EC" and crv == "P-256":
        alg = "ES256"
    else:
        raise InvalidRequestError(f"JWK kty={kty!r} crv={crv!r} is not accepted: use OKP/Ed25519 or EC/P-256")
    if jwk.get("alg") not in (None, alg):
        raise InvalidRequestError(f"the JWK says alg={jwk.get('alg')!r}, but a {crv} key signs only with {alg}")
    if jwk.get("use") not in (None, "sig"):
        raise InvalidRequestError("the JWK's 'use' must be 'sig'")
    try:
        if alg == "EdDSA":
            raw = b64url_decode(jwk["x"])
            if len(raw) != 32:
                raise ValueError("x must be 32 bytes")
            key: PublicKeyType = Ed25519PublicKey.from_public_bytes(raw)
        else:
            x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
            if len(x) != 32 or len(y) != 32:
                raise ValueError("x and y must be 32 bytes")
            key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                ec.SECP256R1()).public_key()
    except (KeyError, ValueError, TypeError):
        raise InvalidRequestError(f"the {crv} JWK's coordinates are missing or invalid") from None
    return from_key(key)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise InvalidRequestError("the key file starts with '{' but is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidRequestError("a JWK is a JSON object")
    if "keys" in value:
        raise InvalidRequestError("this is a JWK set: give one key (one object of its 'keys')")
    return value
