"""Errors of the consent registry, under the project's one exception tree."""

from __future__ import annotations

from governance.errors import CitygovError, InvalidRequestError, NotFoundError, RetriableError, VerificationError


class ConsentError(CitygovError):
    """The consent registry refused an operation."""

    code = "consent_error"


class InvalidConsentError(ConsentError, InvalidRequestError):
    """A consent request is incomplete or inconsistent (no purpose, a period that ends before it starts…)."""

    code = "invalid_consent"


class ConsentStateError(ConsentError):
    """The operation does not apply to the consent as it stands (renewing a withdrawn consent)."""

    code = "consent_state"


class ConsentNotFoundError(NotFoundError):
    """No consent with that id."""

    code = "consent_not_found"


class ConsentConflictError(RetriableError):
    """Another writer changed the consent at the same moment; read it again and retry."""

    code = "consent_conflict"


class InvalidReceiptError(ConsentError, VerificationError):
    """A consent receipt is malformed, not signed by a known key, or altered."""

    code = "receipt_invalid"
