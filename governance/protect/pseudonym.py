"""Pseudonyms: keyed HMAC-SHA256 of an identifier, so the store never holds a resident's real id.

``psn:v1:<52 lowercase base32 characters>`` is the full 256-bit HMAC of the identifier's UTF-8 bytes under
the keyring's pseudonym key. The same id always gives the same pseudonym, so lookups by a real id go
through the same function (``of``). Without the key a pseudonym cannot be reversed, not even by trying
every plausible resident number.

Per-recipient pseudonyms (``rpsn:v1:...``) are what the sharing layer hands out: HMAC of the subject's
pseudonym under a key derived for that recipient, so two departments get unrelated values for one
person and cannot join their results on them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any

from governance.protect.errors import ProtectionError
from governance.protect.keyring import Keyring

PREFIX = "psn:v1:"
RECIPIENT_PREFIX = "rpsn:v1:"
MAX_ID_CHARS = 2048
_PSEUDONYM = re.compile(r"^psn:v1:[a-z2-7]{52}$")
_RECIPIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")


def is_pseudonym(value: object) -> bool:
    """True for a well-formed ``psn:v1:`` pseudonym (it says nothing about which key made it)."""
    return isinstance(value, str) and _PSEUDONYM.match(value) is not None


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


class Pseudonyms:
    """Turns identifiers into pseudonyms with the keyring's pseudonym key."""

    #: Identifiers whose pseudonym is remembered (a city's residents, hubs and devices fit many times over).
    MEMO_SIZE = 65_536

    def __init__(self, keyring: Keyring) -> None:
        self._key = keyring.pseudonym_key()
        self._keyring = keyring
        self._memo: dict[str, str] = {}

    def of(self, identifier: str) -> str:
        """The pseudonym of a real identifier (always hashed, even if it looks like a pseudonym)."""
        found = self._memo.get(identifier)
        if found is not None:
            return found
        if not isinstance(identifier, str) or not identifier or len(identifier) > MAX_ID_CHARS:
            raise ProtectionError(f"an identifier to pseudonymize must be a string of 1 to {MAX_ID_CHARS} characters")
        found = PREFIX + _b32(self._key.digest(identifier.encode("utf-8")))
        if len(self._memo) >= self.MEMO_SIZE:
            self._memo.clear()
        self._memo[identifier] = found
        return found

    def column(self, identifiers: list[str]) -> list[str]:
        """The pseudonym of each identifier of a column, in order (``of`` for each, through the memo in C).

        For a batch's columns, whose values repeat (a resident's readings, a hub's devices): the memo is read
        with one ``map``; only identifiers not in it yet go through ``of`` (which checks and hashes them).
        """
        found: list[str | None] = list(map(self._memo.get, identifiers))
        if None not in found:
            return found  # type: ignore[return-value]
        of = self.of
        return [name if name is not None else of(identifier) for name, identifier in zip(found, identifiers,
                                                                                           strict=True)]

    def remembered(self, values: list[Any]) -> list[str] | None:
        """The pseudonyms of ``values`` if every one is an identifier already in the memo (so a valid one),
        in order; else None (then ask ``of`` or ``column``, which check them)."""
        try:
            found = list(map(self._memo.get, values))
        except TypeError:  # an unhashable value: not an identifier
            return None
        return None if None in found else found  # type: ignore[return-value]

    def many(self, identifiers: Iterable[str]) -> dict[str, str]:
        """Real id → pseudonym for each distinct identifier."""
        return {identifier: self.of(identifier) for identifier in set(identifiers)}

    def subject_ref(self, value: str) -> str:
        """A subject as stored: a pseudonym is kept as it is, anything else is a real id and is hashed.

        Lookups accept both because later stages only ever see stored (pseudonymized) subjects, while
        collection sees real ids.
        """
        return value if is_pseudonym(value) else self.of(value)

    def for_recipient(self, subject: str, recipient: str) -> str:
        """The pseudonym ``recipient`` sees for ``subject`` (a real id or a stored pseudonym)."""
        if not isinstance(recipient, str) or _RECIPIENT.match(recipient) is None:
            raise ProtectionError("a recipient is 1-128 letters, digits or _ . : @ / - starting with a letter or digit")
        pseudonym = self.subject_ref(subject)
        key = self._keyring.recipient_key(recipient)
        return RECIPIENT_PREFIX + _b32(key.digest(pseudonym.encode("ascii")))
