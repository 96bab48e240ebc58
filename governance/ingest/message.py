"""What flows into the pipeline: raw messages as they arrived, and the entities adapters make of them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, NamedTuple

from governance.errors import InvalidRecordError

#: The context of a message that has none (shared, read-only).
NO_CONTEXT: Mapping[str, Any] = MappingProxyType({})


class RawMessage(NamedTuple):
    """One input record exactly as received: an MQTT message, a captured line, or one CSV row.

    ``defect`` is set by a reader that could not even unwrap the record (a capture line that is not
    JSON, bytes that are not UTF-8); the pipeline quarantines such a record without calling the adapter.

    Immutable (a named tuple: every record of every feed makes one, and a frozen dataclass cost three times
    as much to build, ~1.3 µs a record); a changed copy is ``message._replace(...)``.
    """

    payload: bytes
    source: str
    received_at: datetime
    topic: str | None = None
    context: Mapping[str, Any] = NO_CONTEXT
    defect: InvalidRecordError | None = None

    def payload_sha256(self) -> str:
        return hashlib.sha256(self.payload).hexdigest()

    def fingerprint(self, adapter: str) -> str:
        """Identity of the message for idempotence: same adapter, topic and bytes → same fingerprint.

        CSV rows include their header (a row means nothing without it), so the same row under a
        different mapping of columns is a different record.
        """
        prefix = f"{adapter}\x00{self.topic or ''}\x00{self.context.get('header', '')!s}\x00"
        return hashlib.sha256(prefix.encode("utf-8", "surrogateescape") + self.payload).hexdigest()


@dataclass(slots=True)
class ParsedEntity:
    """A standard entity in key-values form (``id`` is ``urn:ngsi-ld:<Type>:<local id>``).

    ``removed_fields`` names input fields the adapter deliberately did not carry over (identifiers
    sent by a counter, for instance); the stored record keeps that note, never the values.
    """

    data: dict[str, Any]
    removed_fields: tuple[str, ...] = ()

    @property
    def entity_type(self) -> str:
        return str(self.data["type"])

    @property
    def entity_id(self) -> str:
        return str(self.data["id"])


def entity_urn(entity_type: str, local_id: str) -> str:
    """The one id scheme citygov uses: ``urn:ngsi-ld:<Type>:<local id>``."""
    if local_id.startswith("urn:ngsi-ld:"):
        return local_id
    return f"urn:ngsi-ld:{entity_type}:{local_id}"
