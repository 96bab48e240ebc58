"""The caller's side of the scheme: sign a request, and generate a key pair to register.

What ``citygov client`` uses, and what a Python caller can import instead of re-implementing
docs/signed-requests.md. Any JOSE library in any language can do the same (the interop test signs
with node's ``jose``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.api.auth import canonical_url
from governance.api.jose import Algorithm, PublicJwk, from_key, sha256_b64url
from governance.errors import ConfigurationError, InvalidRequestError
from governance.keyfiles import create_secret_file

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
Clock = Callable[[], datetime]
DEFAULT_LIFETIME = 60


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RequestSigner:
    """Signs requests as ``issuer`` with ``key`` (named ``kid`` in the registry)."""

    key: PrivateKey
    kid: str
    issuer: str
    audience: str = "citygov"
    lifetime: int = DEFAULT_LIFETIME
    clock: Clock = utc_now

    @property
    def alg(self) -> Algorithm:
        return "EdDSA" if isinstance(self.key, Ed25519PrivateKey) else "ES256"

    def token(self, method: str, url: str, body: bytes = b"", *, jti: str | None = None,
              **overrides: Any) -> str:
        """The bearer token for one request; ``overrides`` replace or add claims (tests use them)."""
        now = int(self.clock().timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer, "aud": self.audience, "iat": now, "exp": now + self.lifetime,
            "jti": jti or uuid.uuid4().hex, "htm": method.upper(), "htu": canonical_url(url),
            "bsh": sha256_b64url(body),
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    def headers(self, method: str, url: str, body: bytes = b"", **overrides: Any) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token(method, url, body, **overrides)}"}
        if body:
            headers["Content-Type"] = "application/json"
        return headers


def generate_key(alg: Algorithm = "EdDSA") -> PrivateKey:
    if alg == "EdDSA":
        return Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise InvalidRequestError(f"unsupported algorithm {alg!r}: EdDSA or ES256")


def public_of(key: PrivateKey) -> PublicJwk:
    return from_key(key.public_key())


def write_key_pair(key: PrivateKey, out: Path) -> dict[str, str]:
    """Write ``private.pem`` (0600, PKCS#8), ``public.pem`` and ``public.jwk.json``; returns their paths and kid."""
    public = public_of(key)
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    out.mkdir(parents=True, exist_ok=True)
    private_path = out / "private.pem"
    if not create_secret_file(private_path, private_pem):
        raise ConfigurationError(f"{private_path} exists already: choose another --out, or remove it first")
    public_pem = public.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (out / "public.pem").write_bytes(public_pem)
    (out / "public.jwk.json").write_bytes(orjson.dumps(public.published(), option=orjson.OPT_INDENT_2) + b"\n")
    return {"kid": public.kid, "alg": public.alg, "private_key": str(private_path),
            "public_pem": str(out / "public.pem"), "public_jwk": str(out / "public.jwk.json")}


def load_private_key(path: Path) -> PrivateKey:
    """A PEM (PKCS#8 or traditional) Ed25519 or P-256 private key; warns nobody, refuses other types."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {type(exc).__name__}") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others: chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise ConfigurationError(f"{path} is a {type(key).__name__} key: use Ed25519 or P-256")
