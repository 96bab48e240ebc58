"""Errors of the anonymization layer."""

from __future__ import annotations

from governance.errors import CitygovError, InvalidRequestError


class AnonymizationError(CitygovError):
    """A release could not be made anonymous as required: nothing is released."""

    code = "anonymization_failed"


class NotKAnonymousError(AnonymizationError):
    """The table about to be released is not k-anonymous (the check before release failed)."""

    code = "not_k_anonymous"


class PrivacyParameterError(InvalidRequestError):
    """A differentially private query cannot be answered as asked (no bounds, non-numeric values...)."""

    code = "invalid_privacy_parameters"
