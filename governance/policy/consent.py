"""Consent lookups for ``require_consent`` obligations, and an interim registry.

The consent module (``governance.consent.ConsentRegistry``: records, receipts, withdrawal) satisfies
:class:`BatchConsentLookup`. Until it is wired in, :class:`InterimConsentRegistry` holds grants in
memory, loaded from a JSON file (``CITYGOV_CONSENT_FILE``). With no lookup configured, every record
whose processing depends on consent is refused: missing consent is never assumed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from governance.errors import ConfigurationError


class ConsentLookup(Protocol):
    """Whether ``subject_id``'s consent to ``purpose`` (for ``recipient``, when given) is in force at ``at``."""

    def has_consent(self, subject_id: str, purpose: str, at: datetime, *, recipient: str | None = None) -> bool: ...


@runtime_checkable
class BatchConsentLookup(ConsentLookup, Protocol):
    """A lookup that answers for many subjects at once (one query instead of one per record)."""

    def consents_for(
        self, subject_ids: Iterable[str], purpose: str, at: datetime, *, recipient: str | None = None
    ) -> set[str]: ...


class ConsentGrant(BaseModel):
    """One consent: from ``given_at`` until ``withdrawn_at`` (open when null), to ``recipients`` if listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str
    purpose: str
    given_at: datetime
    withdrawn_at: datetime | None = None
    recipients: tuple[str, ...] | None = None

    @field_validator("given_at", "withdrawn_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("consent instants need a timezone")
        return value


@dataclass
class _Periods:
    starts: list[datetime]
    grants: list[ConsentGrant]


class InterimConsentRegistry:
    """In-memory consent grants indexed by (subject, purpose): each lookup is a dict hit and a bisect.

    Interim: replaced by the consent module. Purposes match exactly — consent for ``care`` does not
    imply consent for ``care.monitoring``; a person consents to what they were asked about.
    """

    def __init__(self, grants: Iterable[ConsentGrant] = ()) -> None:
        by_key: dict[tuple[str, str], list[ConsentGrant]] = defaultdict(list)
        for grant in grants:
            by_key[(grant.subject, grant.purpose)].append(grant)
        self._index: dict[tuple[str, str], _Periods] = {}
        for key, items in by_key.items():
            items.sort(key=lambda g: g.given_at)
            self._index[key] = _Periods([g.given_at for g in items], items)

    @classmethod
    def from_file(cls, path: Path) -> InterimConsentRegistry:
        """Read ``[{"subject", "purpose", "given_at", "withdrawn_at"?}, …]`` from a JSON file."""
        try:
            rows = orjson.loads(path.read_bytes())
            return cls(ConsentGrant.model_validate(row) for row in rows)
        except (OSError, orjson.JSONDecodeError, ValidationError, TypeError) as exc:
            raise ConfigurationError(f"consent file {path} is not valid: {exc}") from exc

    def has_consent(self, subject_id: str, purpose: str, at: datetime, *, recipient: str | None = None) -> bool:
        periods = self._index.get((subject_id, purpose))
        if periods is None:
            return False
        # the grants given by `at`: consent holds if one is not withdrawn yet (and names the recipient)
        given = periods.grants[: bisect.bisect_right(periods.starts, at)]
        return any(
            (g.withdrawn_at is None or at < g.withdrawn_at)
            and (recipient is None or g.recipients is None or recipient in g.recipients)
            for g in given
        )

    def consents_for(
        self, subject_ids: Iterable[str], purpose: str, at: datetime, *, recipient: str | None = None
    ) -> set[str]:
        return {s for s in set(subject_ids) if self.has_consent(s, purpose, at, recipient=recipient)}
