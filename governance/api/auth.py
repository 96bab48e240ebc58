"""Signed requests: who is calling, proven by a JWS over the request (see docs/signed-requests.md).

Each request carries ``Authorization: Bearer <JWT>`` signed with a key the caller registered. The JWT
binds the request: method (``htm``), URL with its query (``htu``), a hash of the exact body bytes
(``bsh``), an audience, a short validity window and a one-time id (``jti``). The algorithm is never
taken from the token: the header's ``kid`` names a registered key, the key's type fixes its one
algorithm, and a header naming any other algorithm is refused before any cryptography runs.

Every failure raises ``AuthenticationError(reason, detail)``: the caller sees one generic 401; the
reason and detail go to the audit log and the server log. The order of checks is deliberate — cheap
syntax first, then the key, the signature, the claims, the request binding, and the replay store
last, so only a fully valid request consumes its ``jti``.
"""

from __future__ import annotations

import base64
import functools
import hmac
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from governance.api.departments import DepartmentRegistry, Kind, RegisteredKey
from governance.api.jose import ALGORITHMS, b64url_decode, sha256_b64url
from governance.api.replay import ReplayStore
from governance.config import Settings
from governance.errors import AuthenticationError

MAX_TOKEN_CHARS = 8192
MAX_JTI_CHARS = 128
_JTI = re.compile(r"^[\x21-\x7e]{1,128}$")
_KID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_UNSUPPORTED_HEADER = ("crit", "b64", "jku", "x5u")
_DEFAULT_PORTS = {"http": 80, "https": 443}
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, as registered (never as the token claims it)."""

    name: str
    kind: Kind
    roles: tuple[str, ...]
    purposes: tuple[str, ...]
    kid: str
    alg: str
    jti: str
    expires_at: int = 0
    """Until when (Unix seconds) the ``jti`` must stay recorded: ``exp`` plus the clock-skew allowance."""

    @property
    def actor(self) -> str:
        """How audit entries name the caller: ``department:transport``, ``external:public-health-institute``."""
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Claimed:
    """What a failed request named, for its audit entry: the ``kid`` from the token header (syntax-checked,
    never trusted) and, once that kid was found in the registry, the key's registered owner."""

    kid: str | None = None
    key_owner: str | None = None


class SignedRequestError(AuthenticationError):
    """An authentication failure with what the token claimed (for the audit entry)."""

    def __init__(self, reason: str, detail: str = "", *, claimed: Claimed | None = None) -> None:
        super().__init__(reason, detail)
        self.claimed = claimed or Claimed()


@functools.lru_cache(maxsize=256)
def canonical_url(url: str) -> str:
    """The form ``htu`` is compared in: lower-case scheme and host, no default port, no fragment.

    The path and the query are kept byte for byte (no decoding, no reordering); an empty path is ``/``;
    a ``?`` with nothing after it is dropped. Raises ValueError for what is not an absolute http(s) URL.
    Results are memoized (a server sees the same few URLs over and over; failures are not kept).
    """
    if not isinstance(url, str) or len(url) > MAX_TOKEN_CHARS or not url.isascii() or any(
            c in url for c in " \t\r\n#"):
        raise ValueError("not an absolute URL without fragment")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        raise ValueError("not an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    authority = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path or "/"
    return f"{scheme}://{authority}{path}" + (f"?{parts.query}" if parts.query else "")


def request_url(scope: Mapping[str, Any], public_url: str | None) -> str:
    """The canonical URL of the request in ``scope``: against the configured public base URL if any,
    else from the request's own scheme and Host header."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) and raw_path else scope.get("path", "/")
    query = scope.get("query_string", b"").decode("latin-1")
    suffix = path + (f"?{query}" if query else "")
    if public_url:
        return canonical_url(public_url.rstrip("/") + suffix)
    host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), None)
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return canonical_url(f"{scope.get('scheme', 'http')}://{host}{suffix}")


class Authenticator:
    """Checks signed requests against the registry and the replay store."""

    def __init__(self, registry: DepartmentRegistry, replay: ReplayStore, settings: Settings, *,
                 clock: Clock = utc_now) -> None:
        self.registry = registry
        self.replay = replay
        self.audience = settings.api_audience
        self.skew = settings.api_clock_skew_seconds
        self.max_lifetime = settings.api_token_max_lifetime_seconds
        self.clock = clock

    def authenticate(self, *, method: str, url: str, body: bytes, authorization: str | None,
                     claim: bool = True) -> Caller:
        """The caller of this request, or ``SignedRequestError`` with the precise reason.

        ``claim=False`` checks everything but the replay store: the caller then records ``(caller.name,
        caller.jti, caller.expires_at)`` itself (``ReplayStore.claim_in``) in the request's write transaction,
        and refuses the request as ``jti_replayed`` when that finds the id taken.
        """
        token = _bearer(authorization)
        parts = token.split(".")
        header = _header(parts)
        kid = header["kid"]
        claimed = Claimed(kid=kid)
        payload = _payload_or_none(parts[1])
        # the jti as the (not yet verified) payload names it: the key's lookup also says whether its owner used
        # it already, in the same statement; it is acted on only once everything else checked out
        registered = self.registry.lookup_key(kid, jti=None if claim else _unverified_jti(payload))
        if registered is None:
            raise SignedRequestError("kid_unknown", "no registered key has this kid", claimed=claimed)
        claimed = Claimed(kid=kid, key_owner=registered.department)
        if registered.status != "active":
            raise SignedRequestError("key_revoked", f"the key is {registered.status}", claimed=claimed)
        if header["alg"] != registered.alg:
            raise SignedRequestError("alg_mismatch", f"header alg {header['alg']} but the key is {registered.alg}",
                              claimed=claimed)
        claims = _claims(_verified(parts, payload, registered, claimed), claimed)
        self._check_claims(claims, registered.department, claimed)
        self._check_binding(claims, method=method, url=url, body=body, claimed=claimed)
        expires_at = math.ceil(claims["exp"]) + self.skew
        if claim and not self.replay.claim(registered.department, claims["jti"], expires_at):
            raise replayed(claimed)
        if not claim and registered.jti_seen:  # a replay runs no query (a racing one is caught by the claim)
            raise replayed(claimed)
        return Caller(name=registered.department, kind=registered.kind, roles=registered.roles,
                      purposes=registered.purposes, kid=kid, alg=registered.alg, jti=claims["jti"],
                      expires_at=expires_at)

    def _check_claims(self, claims: dict[str, Any], issuer: str, claimed: Claimed) -> None:
        def fail(reason: str, detail: str) -> SignedRequestError:
            return SignedRequestError(reason, detail, claimed=claimed)

        if claims["iss"] != issuer:
            raise fail("issuer_mismatch", "iss is not the department the key is registered to")
        audience = claims["aud"]
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise fail("audience_mismatch", "aud does not name this service")
        now = self.clock().timestamp()
        iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
        if exp <= iat:
            raise fail("lifetime_invalid", "exp is not after iat")
        if exp - iat > self.max_lifetime:
            raise fail("lifetime_too_long", f"exp - iat is {exp - iat:.0f} s, over {self.max_lifetime} s")
        if iat > now + self.skew:
            raise fail("issued_in_future", f"iat is {iat - now:.0f} s ahead of the server clock")
        if nbf is not None and nbf > now + self.skew:
            raise fail("not_yet_valid", f"nbf is {nbf - now:.0f} s ahead of the server clock")
        if exp + self.skew <= now:
            raise fail("expired", f"expired {now - exp:.0f} s ago")

    def _check_binding(self, claims: dict[str, Any], *, method: str, url: str, body: bytes,
                       claimed: Claimed) -> None:
        if claims["htm"] != method.upper():
            raise SignedRequestError("method_mismatch", "htm is not the request's method", claimed=claimed)
        try:
            signed_url = canonical_url(claims["htu"])
        except ValueError:
            raise SignedRequestError("url_invalid", "htu is not an absolute http(s) URL", claimed=claimed) from None
        if signed_url != url:
            raise SignedRequestError("url_mismatch", "htu is not the request's URL (scheme, host, port, path, query)",
                              claimed=claimed)
        if not hmac.compare_digest(claims["bsh"], sha256_b64url(body)):
            raise SignedRequestError("body_hash_mismatch", "bsh is not the SHA-256 of the body received",
                                     claimed=claimed)


def replayed(claimed: Claimed) -> SignedRequestError:
    """The failure of a request whose ``(iss, jti)`` is already recorded."""
    return SignedRequestError("jti_replayed", "this jti was already used by this issuer", claimed=claimed)


def _bearer(authorization: str | None) -> str:
    if authorization is None or not authorization.strip():
        raise SignedRequestError("header_missing", "no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignedRequestError("header_malformed", "Authorization is not 'Bearer <token>'")
    token = token.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise SignedRequestError("token_too_large", f"token over {MAX_TOKEN_CHARS} characters")
    return token


def _header(parts: list[str]) -> dict[str, Any]:
    if len(parts) != 3 or not parts[0]:
        raise SignedRequestError("token_malformed", "not a compact JWS (three dot-separated parts)")
    try:
        header = orjson.loads(b64url_decode(parts[0]))
    except (ValueError, orjson.JSONDecodeError):
        raise SignedRequestError("token_malformed", "the header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise SignedRequestError("token_malformed", "the header is not a JSON object")
    kid = header.get("kid")
    claimed = Claimed(kid=kid if isinstance(kid, str) and _KID.match(kid) else None)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 and alg.isprintable() else "?"
        raise SignedRequestError("alg_not_allowed", f"alg {shown!r} is not EdDSA or ES256", claimed=claimed)
    if not parts[1] or not parts[2]:
        raise SignedRequestError("token_malformed", "empty payload or signature (detached tokens are not accepted)",
                                 claimed=claimed)
    if not isinstance(kid, str) or not kid:
        raise SignedRequestError("kid_missing", "the header has no kid", claimed=claimed)
    if not _KID.match(kid):
        raise SignedRequestError("kid_unknown", "the kid is not a key thumbprint", claimed=claimed)
    for name in _UNSUPPORTED_HEADER:
        if name in header:
            raise SignedRequestError("header_unsupported", f"header parameter {name!r} is not supported",
                                     claimed=claimed)
    return header


_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_UNUSED_BITS = {2: 0x0F, 3: 0x03}
"""The bits of the last character that a canonical encoding leaves zero, by the length's remainder mod 4."""


def _segment(text: str) -> bytes:
    """A base64url part of the token: the strict alphabet, canonical, at most two ``=`` of padding (and then a
    length that is a multiple of 4) — what PyJWT accepted. ValueError otherwise."""
    stripped = text.rstrip("=")
    padding = len(text) - len(stripped)
    rest = len(stripped) % 4
    if padding > 2 or (padding and len(text) % 4) or rest == 1 or not _SEGMENT.fullmatch(stripped):
        raise ValueError("not base64url")
    if rest and _ALPHABET.index(stripped[-1]) & _UNUSED_BITS[rest]:
        raise ValueError("not the canonical encoding")
    return base64.urlsafe_b64decode(stripped + "=" * (4 - rest) if rest else stripped)


def _payload_or_none(text: str) -> bytes | None:
    try:
        return _segment(text)
    except ValueError:
        return None


def _verified(parts: list[str], payload: bytes | None, registered: RegisteredKey, claimed: Claimed) -> bytes:
    """The payload bytes once the signature over ``header.payload`` verified with the registered key and its one
    algorithm (Ed25519, or ECDSA P-256 with SHA-256 over the raw 64-byte ``r || s`` of RFC 7518 §3.4)."""
    try:
        signature = _segment(parts[2])
    except ValueError:
        signature = None
    if payload is None or signature is None:
        raise SignedRequestError("token_malformed", "DecodeError", claimed=claimed)
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    key = registered.key
    try:
        if registered.alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, signing_input)
        elif registered.alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidSignature
    except InvalidSignature:
        raise SignedRequestError("signature_invalid", "the signature does not verify with the registered key",
                                 claimed=claimed) from None
    return payload


def _unverified_jti(payload: bytes | None) -> str | None:
    """The ``jti`` the payload names, if it names one that could be valid; nothing here is trusted."""
    if payload is None:
        return None
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    jti = claims.get("jti") if isinstance(claims, dict) else None
    return jti if isinstance(jti, str) and _JTI.match(jti) else None


_REQUIRED_STRINGS = ("iss", "jti", "htm", "htu", "bsh")
_REQUIRED_TIMES = ("iat", "exp")


def _claims(payload: bytes, claimed: Claimed) -> dict[str, Any]:
    try:
        claims = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise SignedRequestError("claims_malformed", "the payload is not JSON", claimed=claimed) from None
    if not isinstance(claims, dict):
        raise SignedRequestError("claims_malformed", "the payload is not a JSON object", claimed=claimed)
    for name in (*_REQUIRED_STRINGS, *_REQUIRED_TIMES, "aud"):
        if name not in claims:
            raise SignedRequestError("claim_missing", f"no {name!r} claim", claimed=claimed)
    for name in _REQUIRED_STRINGS:
        if not isinstance(claims[name], str) or not claims[name]:
            raise SignedRequestError("claims_malformed", f"{name!r} must be a non-empty string", claimed=claimed)
    for name in (*_REQUIRED_TIMES, "nbf"):
        value = claims.get(name)
        if name in claims and not (isinstance(value, int | float) and not isinstance(value, bool)
                                   and math.isfinite(value)):
            raise SignedRequestError("claims_malformed", f"{name!r} must be a number of seconds", claimed=claimed)
    aud = claims["aud"]
    if not (isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))):
        raise SignedRequestError("claims_malformed", "'aud' must be a string or a list of strings", claimed=claimed)
    if not _JTI.match(claims["jti"]):
        raise SignedRequestError("jti_invalid", f"jti must be 1 to {MAX_JTI_CHARS} printable ASCII characters",
                          claimed=claimed)
    return claims
