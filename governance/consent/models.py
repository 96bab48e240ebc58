"""What a consent says, as requested and as recorded: the registry's input and output shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

LegalBasis = Literal["consent", "explicit-consent"]
"""GDPR Art. 6(1)(a) consent, or Art. 9(2)(a) explicit consent (required for special-category data)."""

Status = Literal["active", "withdrawn"]
EffectiveStatus = Literal["pending", "active", "expired", "withdrawn"]
EventKind = Literal["grant", "renew", "withdraw"]

Purpose = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Recipient = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}$")]
Category = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("times must carry a time zone (e.g. 2026-11-20T12:00:00+01:00)")
    return value.astimezone(UTC)


AwareTime = Annotated[datetime | None, AfterValidator(_aware)]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class ConsentGrant(BaseModel):
    """A consent as the resident (or their care agency) gives it. Kantara Consent Receipt fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject_id: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    """The resident's real id (``urn:ngsi-ld:Person:...``); only its pseudonym is stored."""
    controller: Text
    on_behalf: bool = False
    """True when an agency records the consent on behalf of the controller."""
    purposes: Annotated[list[Purpose], Field(min_length=1, max_length=32), AfterValidator(_unique)]
    recipients: Annotated[list[Recipient], Field(max_length=64), AfterValidator(_unique)] = []
    """Who the data may be shared with; empty means nobody outside the controller."""
    legal_basis: LegalBasis = "consent"
    collection_method: Text
    jurisdiction: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "EU"
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] = "en"
    policy_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    special_categories: Annotated[list[Category], Field(max_length=16), AfterValidator(_unique)] = []
    """GDPR Art. 9 categories covered (``health``…): they require ``explicit-consent``."""
    valid_from: AwareTime = None
    valid_until: AwareTime = None

    @model_validator(mode="after")
    def _consistent(self) -> ConsentGrant:
        if self.special_categories and self.legal_basis != "explicit-consent":
            raise ValueError("special-category data needs legal_basis 'explicit-consent' (GDPR Art. 9(2)(a))")
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self


class ConsentEventView(BaseModel):
    """One entry of a consent's history."""

    seq: int
    event: EventKind
    at: datetime
    actor: str
    reason: str | None
    status: Status
    valid_from: datetime
    valid_until: datetime | None
    receipt_id: str


class ConsentView(BaseModel):
    """A consent as recorded. ``subject`` is the pseudonym."""

    consent_id: str
    subject: str
    controller: str
    on_behalf: bool
    purposes: list[str]
    recipients: list[str]
    legal_basis: LegalBasis
    collection_method: str
    jurisdiction: str
    language: str
    policy_url: str | None
    special_categories: list[str]
    valid_from: datetime
    valid_until: datetime | None
    status: Status
    granted_at: datetime
    updated_at: datetime
    withdrawn_at: datetime | None
    seq: int
    history: list[ConsentEventView] = []

    def status_at(self, at: datetime) -> EffectiveStatus:
        """The status as it stands now, read at ``at`` (pending before the period, expired after it)."""
        if self.status == "withdrawn":
            return "withdrawn"
        if at < self.valid_from:
            return "pending"
        if self.valid_until is not None and at >= self.valid_until:
            return "expired"
        return "active"


class ConsentResult(BaseModel):
    """What a grant, renewal or withdrawal returns: the consent as it now stands and the signed receipt."""

    consent: ConsentView
    receipt_id: str
    receipt: str
