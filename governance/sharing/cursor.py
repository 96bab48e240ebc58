"""Opaque, tamper-evident page cursors: the last primary key read, bound to the requester and the query.

``c1.<base64url(JSON {"k": pk})>.<base64url(HMAC-SHA256(key, "c1." payload "." binding)[:16])>``. The
binding is a hash of who asked and of the query without its cursor and page size, so a cursor does not
work for another requester or another query, and a changed cursor does not verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from governance.errors import InvalidRequestError

VERSION = "c1"
MAX_CURSOR_CHARS = 256
_TAG_BYTES = 16


class Digest(Protocol):
    """A keyed MAC (``governance.protect.keyring.HmacKey`` is one)."""

    def digest(self, message: bytes) -> bytes: ...


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def binding(requester: Mapping[str, Any], query: Mapping[str, Any]) -> bytes:
    """What a cursor is bound to: the requester and the query (without cursor and page size)."""
    body = {k: v for k, v in query.items() if k not in ("cursor", "page_size")}
    return hashlib.sha256(orjson.dumps({"r": requester, "q": body}, option=orjson.OPT_SORT_KEYS)).digest()


class CursorCodec:
    def __init__(self, key: Digest) -> None:
        self._key = key

    def _tag(self, payload: str, bound: bytes) -> bytes:
        return self._key.digest(f"{VERSION}.{payload}.".encode("ascii") + bound)[:_TAG_BYTES]

    def encode(self, pk: int, bound: bytes) -> str:
        payload = _b64(orjson.dumps({"k": pk}))
        return f"{VERSION}.{payload}.{_b64(self._tag(payload, bound))}"

    def decode(self, token: str, bound: bytes) -> int:
        """The primary key a cursor continues after; ``InvalidRequestError`` for anything else."""
        invalid = InvalidRequestError("the cursor is not valid for this query (changed, or from another query)")
        if not isinstance(token, str) or len(token) > MAX_CURSOR_CHARS:
            raise invalid
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise invalid
        try:
            tag = _unb64(parts[2])
            expected = self._tag(parts[1], bound)
            if not hmac.compare_digest(tag, expected):
                raise invalid
            value = orjson.loads(_unb64(parts[1]))
        except (binascii.Error, ValueError, orjson.JSONDecodeError):
            raise invalid from None
        pk = value.get("k") if isinstance(value, dict) else None
        if not isinstance(pk, int) or isinstance(pk, bool) or pk < 0:
            raise invalid
        return pk
