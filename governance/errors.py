"""One exception tree for citygov. The API maps it to HTTP responses in one place.

Errors are grouped by lifecycle, as ingestion frameworks do: configuration problems stop a run before
it starts; an invalid record is quarantined and the run goes on; a retriable error may succeed later;
anything else is fatal for the operation at hand.
"""

from __future__ import annotations


class CitygovError(Exception):
    """Base of every error citygov raises on purpose."""

    #: A stable, machine-readable code, shown in ``--json`` output and API error bodies.
    code = "citygov_error"


class ConfigurationError(CitygovError):
    """Settings, a provisioning file or a mapping file is missing or wrong."""

    code = "configuration_error"


class UnknownAdapterError(ConfigurationError):
    """No adapter is registered under that name."""

    code = "unknown_adapter"


class InvalidRequestError(CitygovError):
    """A request a person made (CLI options, an API body) is not acceptable as given."""

    code = "invalid_request"


class VerificationError(CitygovError):
    """A signature, proof or receipt did not verify: the thing checked cannot be trusted."""

    code = "verification_failed"


class InvalidRecordError(CitygovError):
    """One input record cannot be accepted; it goes to quarantine with this reason.

    ``reason`` is a short machine-readable category (used for counts by reason); ``detail`` is the
    sentence a person reads to fix the feed, naming the property or column involved.
    """

    code = "invalid_record"

    def __init__(self, reason: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


class RetriableError(CitygovError):
    """A transient failure (database or broker unreachable); the same work may succeed later."""

    code = "retriable"


class StorageError(CitygovError):
    """The store refused an operation."""

    code = "storage_error"


class NotFoundError(CitygovError):
    """The thing asked for does not exist."""

    code = "not_found"


class AuthenticationError(CitygovError):
    """A request's signature or credentials did not check out.

    Callers see only the generic message (HTTP 401); ``reason`` is the precise cause, for the audit log.
    """

    code = "unauthenticated"
    public_message = "the request could not be authenticated"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class AccessDeniedError(CitygovError):
    """The caller is known but may not do this (a policy deny, no agreement, no consent): HTTP 403.

    ``reasons`` are the policy's reason codes; they describe the request, never other people's data.
    """

    code = "access_denied"

    def __init__(self, message: str, *, reasons: tuple[str, ...] = (), decision_id: str | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.decision_id = decision_id


class QuotaExceededError(AccessDeniedError):
    """A request quota or a privacy budget is spent: HTTP 429 for quotas, 403 for budgets."""

    code = "quota_exceeded"


class PayloadTooLargeError(InvalidRequestError):
    """A request body or a result is over its limit: HTTP 413."""

    code = "payload_too_large"
